"""Client-level differential privacy for heterogeneous submodels.

:class:`DPSettings` (clip C, noise multiplier z, delta, mode) configures the merge path;
:mod:`edge_sdk.privacy.mechanism` clips changes and draws noise calibrated to how many
clients hold each coordinate; :mod:`edge_sdk.privacy.accountant` turns the noise into
(epsilon, delta) with Google's ``dp-accounting`` (``pip install "edge-fl-sdk[privacy]"``).
"""

from __future__ import annotations

from edge_sdk.privacy.accountant import PrivacyAccountant, epsilon_for, noise_for_epsilon
from edge_sdk.privacy.mechanism import DP_MODES, DPSettings, clip_factor, client_noise_std, privatize_update

__all__ = ["DPSettings", "DP_MODES", "PrivacyAccountant", "epsilon_for", "noise_for_epsilon", "clip_factor",
           "client_noise_std", "privatize_update"]
