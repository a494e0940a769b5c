/* The native half of lzfs/store/codec.py: decoding and verifying one frame record.
 *
 * Why it exists: a restore decodes ~4,000 frames per GiB, and in Python each one parsed its
 * block table into tuples, hashed its pages one call at a time and held the GIL for all of
 * that, so the decoding threads and pyfuse3's request thread took turns instead of running
 * side by side (docs/benchmarks.md, "Native decoding"). Here one call checks the header, the
 * payload checksum, decompresses and checks every block's XXH3-128, with the GIL released
 * for everything but allocating the result.
 *
 * codec.decode_frame (Python) stays the reference: tests/unit/test_codec_native.py holds the
 * two to the same answers, including every kind of damage, and the messages are the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lz4.h>
#include <xxhash.h>
#if defined(__x86_64__)
/* libxxhash's entry points that pick SSE2, AVX2 or AVX-512 at run time: the header's inline
 * code is SSE2 only, and hashing took 1.5x as long with it as with the xxhash module's AVX2 */
#include <xxh_x86dispatch.h>
#endif

/* docs/format.md, "Frame records": <4sBBHIIQ then count * <I16s */
#define HEAD_LEN 24
#define ENTRY_LEN 20
#define HASH_LEN 16
#define FRAME_VERSION 1
#define CODEC_RAW 1
#define CODEC_LZ4 2
#define FRAME_MAX (256 * 1024)

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) {
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* What went wrong, filled without the GIL and raised after it is taken back. */
typedef struct {
    char msg[160];
} failure;

static int fail(failure *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* Header and block table; on success *raw_len, *stored_len, *codec, *count are set. */
static int check_header(const unsigned char *rec, Py_ssize_t len, uint32_t *raw_len,
                        uint32_t *stored_len, int *codec, unsigned *count, failure *f) {
    if (len < HEAD_LEN)
        return fail(f, "truncated frame header");
    if (memcmp(rec, "LZFR", 4) != 0)
        return fail(f, "bad frame magic");
    if (rec[4] != FRAME_VERSION)
        return fail(f, "frame version %d is not supported", rec[4]);
    *codec = rec[5];
    if (*codec != CODEC_RAW && *codec != CODEC_LZ4)
        return fail(f, "unknown codec %d", *codec);
    *count = le16(rec + 6);
    if (*count == 0)
        return fail(f, "frame holds no blocks");
    *raw_len = le32(rec + 8);
    if (*raw_len > FRAME_MAX)
        return fail(f, "frame raw length %u exceeds %d", *raw_len, FRAME_MAX);
    *stored_len = le32(rec + 12);
    Py_ssize_t end = HEAD_LEN + (Py_ssize_t)*count * ENTRY_LEN;
    if (len < end)
        return fail(f, "truncated frame block table");
    uint64_t sum = 0;
    for (unsigned i = 0; i < *count; i++)
        sum += le32(rec + HEAD_LEN + (Py_ssize_t)i * ENTRY_LEN);
    if (sum != *raw_len)
        return fail(f, "frame block table does not add up to its raw length");
    return 0;
}

/* Payload checksum, decompression into out, block hashes (runs without the GIL). */
static int decode_into(const unsigned char *rec, Py_ssize_t len, uint32_t raw_len,
                       uint32_t stored_len, int codec, unsigned count, uint64_t seed,
                       char *out, failure *f) {
    Py_ssize_t head = HEAD_LEN + (Py_ssize_t)count * ENTRY_LEN;
    const unsigned char *payload = rec + head;
    Py_ssize_t plen = len - head;
    if (plen != (Py_ssize_t)stored_len)
        return fail(f, "frame payload is %zd bytes, header says %u", plen, stored_len);
    if (XXH3_64bits(payload, (size_t)plen) != le64(rec + 16))
        return fail(f, "frame payload checksum mismatch");
    if (codec == CODEC_RAW) {
        if (plen != (Py_ssize_t)raw_len)
            return fail(f, "raw frame is %zd bytes, expected %u", plen, raw_len);
        memcpy(out, payload, raw_len);
    } else {
        int n = LZ4_decompress_safe((const char *)payload, out, (int)plen, (int)raw_len);
        if (n < 0)
            return fail(f, "LZ4 frame does not decode: error %d", n);
        if ((uint32_t)n != raw_len)
            return fail(f, "LZ4 frame decodes to %d bytes, expected %u", n, raw_len);
    }
    Py_ssize_t pos = 0;
    for (unsigned i = 0; i < count; i++) {
        const unsigned char *entry = rec + HEAD_LEN + (Py_ssize_t)i * ENTRY_LEN;
        uint32_t n = le32(entry);
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(out + pos, n, seed));
        if (memcmp(c.digest, entry + 4, HASH_LEN) != 0)
            return fail(f, "block at frame offset %zd fails its content hash", pos);
        pos += n;
    }
    return 0;
}

PyDoc_STRVAR(decode_record_doc,
"decode_record(record, seed) -> (raw_len, stored_len, raw)\n\n"
"Verify and decode one frame record as codec.decode_frame does; ValueError names what is\n"
"wrong with it. The GIL is released while the bytes are checked and decompressed.");

static PyObject *decode_record(PyObject *self, PyObject *args) {
    Py_buffer rec;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "y*K", &rec, &seed))
        return NULL;
    failure f;
    uint32_t raw_len = 0, stored_len = 0;
    int codec = 0;
    unsigned count = 0;
    PyObject *raw = NULL;
    if (check_header(rec.buf, rec.len, &raw_len, &stored_len, &codec, &count, &f) == 0) {
        raw = PyBytes_FromStringAndSize(NULL, raw_len);
        if (raw == NULL) {
            PyBuffer_Release(&rec);
            return NULL;
        }
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = decode_into(rec.buf, rec.len, raw_len, stored_len, codec, count, (uint64_t)seed,
                         PyBytes_AS_STRING(raw), &f);
        Py_END_ALLOW_THREADS
        if (rc != 0)
            Py_CLEAR(raw);
    }
    PyBuffer_Release(&rec);
    if (raw == NULL) {
        PyErr_SetString(PyExc_ValueError, f.msg);
        return NULL;
    }
    return Py_BuildValue("(IIN)", raw_len, stored_len, raw);
}

static PyMethodDef methods[] = {
    {"decode_record", decode_record, METH_VARARGS, decode_record_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "lzfs.store._codec",
    "Native frame decoding (see lzfs/store/_codec.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__codec(void) { return PyModule_Create(&module); }
