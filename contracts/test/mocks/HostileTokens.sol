// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice An ERC-20 whose issuer can block addresses (as USDC and USDT do): any transfer from or to
/// a blocked address reverts. A blocked trainer can still be paid through claimTo.
contract BlocklistToken is ERC20 {
    error Blocked(address account);

    mapping(address => bool) public blocked;

    constructor() ERC20("Blocklist Token", "BLK") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setBlocked(address account, bool value) external {
        blocked[account] = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (blocked[from]) revert Blocked(from);
        if (blocked[to]) revert Blocked(to);
        super._update(from, to, value);
    }
}

/// @notice An ERC-20 that calls back into a target (the market) on every transfer, after moving
/// the balances, with calldata chosen by the test (a claim, a withdrawal, an expiry...). The
/// nested call's failure is swallowed and recorded, so the outer transfer completes and the test
/// can check what the re-entry achieved: paying functions must refuse it, and no nested call may
/// move the target's balance.
contract ReentrantToken is ERC20 {
    address public hookTarget;
    bytes public hookData;
    bool internal _inHook;

    uint256 public hookCalls;
    uint256 public hookSuccesses;
    /// @dev A nested call moved the target's own token balance (must never happen).
    bool public nestedMovedBalance;

    constructor() ERC20("Reentrant Token", "RNT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setHook(address target, bytes calldata data) external {
        hookTarget = target;
        hookData = data;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        address target = hookTarget;
        if (target == address(0) || _inHook || from == address(0)) return;
        _inHook = true;
        hookCalls++;
        uint256 before = balanceOf(target);
        (bool ok,) = target.call(hookData);
        if (ok) hookSuccesses++;
        if (balanceOf(target) != before) nestedMovedBalance = true;
        _inHook = false;
    }
}

/// @notice A contract account the invariant handler acts through (a trainer or an owner that is a
/// contract). On receiving ETH it either accepts, rejects, or tries to re-enter the market with
/// stored calldata (recording the outcome; the re-entry must fail).
contract Puppet {
    enum Mode {
        Accept,
        Reject,
        Reenter
    }

    error NoEtherPlease();

    Mode public mode;
    address public reenterTarget;
    bytes public reenterData;
    uint256 public reentries;
    uint256 public reentrySuccesses;

    function setMode(Mode mode_, address target, bytes calldata data) external {
        mode = mode_;
        reenterTarget = target;
        reenterData = data;
    }

    /// @dev Forward a call as this account; bubbles the revert so the caller sees the real error.
    function exec(address target, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        if (mode == Mode.Reject) revert NoEtherPlease();
        if (mode == Mode.Reenter) {
            reentries++;
            (bool ok,) = reenterTarget.call(reenterData);
            if (ok) reentrySuccesses++;
        }
    }
}
