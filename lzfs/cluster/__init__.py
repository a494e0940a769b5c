"""Snapshots across a cluster: the block store on an object store (S3-compatible or a shared
directory), a node-local cache, publication of snapshots as immutable manifests, and gc.

A node mounts ``s3://BUCKET/PREFIX`` with a local cache directory. The cache directory is an
ordinary lzfs store: the node's working store, where what it writes lands first. Sealed packs
are uploaded as immutable objects named by their content hash; a snapshot directory is
published as one immutable manifest object once its packs are up. Other nodes import published
manifests into their own working store and read the frames by ranged GETs through a
size-limited segment cache. docs/cluster.md has the bucket layout and the rules.
"""
