"""What a store holds, told to people: dedup accounting, checkpoint archives as snapshots,
fsck, and the tables that print them."""
