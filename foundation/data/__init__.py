"""Jets: generation, public-format readers, the canonical layout, features and loaders."""

from foundation.data.jets import JetArrays, jet_kinematics

__all__ = ["JetArrays", "jet_kinematics"]
