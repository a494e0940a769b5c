"""The block store: the store directory's layout, the metadata DB and the tables' owners
(namespace, frames, block maps, the page index), pack files, the codec and the cut points.
Import what you need from its modules: this package imports nothing, so that a command that
only needs a constant (a default, a file name) does not pay for the store."""
