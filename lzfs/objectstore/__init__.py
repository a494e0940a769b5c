"""Object stores: the protocol the cluster code needs, its S3 and directory backends, and the
node-local cache of pack segments."""
