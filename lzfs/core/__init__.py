"""The core of a mount, without the kernel protocol: the file maps, the frame cache and
readahead, commits, settling and gc, and the options and policy a mount runs by."""
