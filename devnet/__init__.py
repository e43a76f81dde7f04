"""Local tooling: the anvil node, the js-ipfs daemon, the Solidity compiler, process control and
free ports. Used by `market stack`, experiments, tests and benchmarks; the protocol library
(`market`, except its CLI app) never imports it."""
