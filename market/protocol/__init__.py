"""What trainers, the aggregator and auditors must agree on byte for byte: the update codec and
its validation, the protocol documents (project spec, round record), model specs, Merkle trees,
and how a round's documents are read back from a store."""
