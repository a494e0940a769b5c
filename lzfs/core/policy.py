"""The core's tunables and their defaults: how often a mount commits, when it settles staged
data, how far a writer may run ahead of the encoder, and how much decoded data it caches.
Kept in a module that imports nothing, so that the `lzfs` command (MountOptions, the man page)
shows them without importing the core."""

COMMIT_INTERVAL = 5.0   # seconds between background commits while anything changed
SETTLE_IDLE = 1.0       # staged data is settled once no request came for this long
CACHE_MB = 128          # decoded frames kept in memory (prefetch.FrameCache)
# a restore's packs are read into the page cache ahead of its decoding by at most this much
# (FrameCache.stream)
STREAM_LEAD = 256 << 20

BATCH = 4 << 20         # a file map encodes once this much is pending
MAX_PENDING = 16 << 20  # writers wait beyond this
# the writer is this far ahead of the encoder: stage (store raw, settle when idle) instead
STAGE_BACKLOG = 2 * BATCH
SETTLE_BYTES = 4 << 20  # staged bytes stored again per step of settle()
# a new file is staged through the kernel only while the store's disk has this much room
# beyond the reserve: its raw bytes land there before they are compressed
STAGE_HEADROOM = 4 << 30
