/* memhold: the process inside the test containers (built static by lzfs/testing/container.py).
 *
 *   memhold MIB SEED [CTL]
 *
 * Holds MIB MiB of anonymous memory, a third each: pseudo-random bytes (incompressible),
 * text (compresses about 3x), and zeros written page by page (touched, so CRIU dumps them).
 * Writes the memory's checksum to CTL/ready (default /ctl), then sleeps; on SIGUSR1 it
 * checksums the memory again and writes "N CHECKSUM" to CTL/result (N counts the answers), so
 * a checkpointed and restored container can show its memory is intact. SIGTERM ends it (as
 * pid 1 of a container it would otherwise ignore the signal). It keeps no file open, so CRIU
 * has nothing but memory to carry. Static and libc-only: no rootfs beyond this one file.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t asked;

static void on_usr1(int sig) { (void)sig; asked = 1; }
static void on_term(int sig) { (void)sig; _exit(0); }

static uint64_t next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static uint64_t checksum(const unsigned char *mem, size_t n) {
    const uint64_t *w = (const uint64_t *)mem;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n / 8; i++) {
        h ^= w[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

static void put(const char *dir, const char *name, const char *text) {
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    ssize_t ignored = write(fd, text, strlen(text));
    (void)ignored;
    close(fd);
    rename(tmp, dst);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: memhold MIB SEED [CTL]\n");
        return 2;
    }
    size_t n = (size_t)strtoul(argv[1], NULL, 10) << 20;
    uint64_t seed = strtoull(argv[2], NULL, 10) * 2 + 1;
    const char *ctl = argc > 3 ? argv[3] : "/ctl";
    unsigned char *mem = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                              -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    static const char *words[] = {"the", "model", "attends", "to", "every", "token", "in",
                                  "context", "and", "cache", "keeps", "keys", "values",
                                  "for", "each", "layer", "prompt", "batch", "logits"};
    size_t third = n / 3 & ~(size_t)4095;
    for (size_t i = 0; i < third; i += 8) {
        uint64_t r = next(&seed);
        memcpy(mem + i, &r, 8);
    }
    for (size_t i = third; i < 2 * third;) {
        const char *w = words[next(&seed) % (sizeof words / sizeof *words)];
        size_t k = strlen(w);
        for (size_t j = 0; j <= k && i < 2 * third; j++, i++)
            mem[i] = j < k ? (unsigned char)w[j] : ' ';
    }
    for (size_t i = 2 * third; i < n; i += 4096)
        mem[i] = 0; /* touch: a real page that holds zeros */

    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);

    char line[64];
    snprintf(line, sizeof line, "%016llx\n", (unsigned long long)checksum(mem, n));
    put(ctl, "ready", line);
    for (unsigned long answers = 1;; ) {
        while (!asked)
            sigsuspend(&old); /* returns on a signal, and after a CRIU restore */
        asked = 0;
        snprintf(line, sizeof line, "%lu %016llx\n", answers++,
                 (unsigned long long)checksum(mem, n));
        put(ctl, "result", line);
    }
}
