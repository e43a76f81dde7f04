// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice The naive design the gas benchmark compares against: the aggregator writes one storage
/// slot per trainer per round, and a trainer claims by reading its slot.
contract NaiveLedger {
    mapping(uint256 round => mapping(address trainer => uint256)) public reward;

    function finalizeNaive(uint256 round, address[] calldata trainers, uint256[] calldata amounts) external {
        for (uint256 i = 0; i < trainers.length; ++i) {
            reward[round][trainers[i]] = amounts[i];
        }
    }
}

/// @notice A plain ERC-20 for measuring token-denominated projects.
contract BenchToken is ERC20 {
    constructor() ERC20("Bench", "BNCH") {
        _mint(msg.sender, 1e30);
    }
}
