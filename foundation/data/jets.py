"""The in-memory form of a set of jets that every reader returns and every writer takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foundation.errors import DataFormatError

# Constituent 4-momentum columns, in the order of the last axis of `JetArrays.constituents`.
MOMENTUM_COLUMNS = ("E", "px", "py", "pz")
# Largest |E|, |px|, |py| or |pz| a constituent may have [GeV]: 100 TeV, the collision energy of the
# FCC-hh, seven times the LHC's. Beyond it a value is a unit error or a corrupted file, not physics.
MAX_MOMENTUM_GEV = 1e5


@dataclass
class JetArrays:
    """Jets as padded arrays. Padded entries are zero and `mask` is False there.

    Constituents are pT-ordered (hardest first) within each jet.
    """

    constituents: np.ndarray  # (J, N, 4) float32: E, px, py, pz in GeV
    mask: np.ndarray  # (J, N) bool: True for a real constituent
    charge: np.ndarray  # (J, N) int8: electric charge, 0 where unknown or padded
    pid: np.ndarray  # (J, N) int32: PDG id, 0 where unknown or padded
    label: np.ndarray  # (J,) int64: index into class_names
    class_names: list[str]
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.constituents.shape[0])

    @property
    def max_particles(self) -> int:
        return int(self.constituents.shape[1])

    @property
    def multiplicity(self) -> np.ndarray:  # (J,)
        return self.mask.sum(axis=1).astype(np.int64)

    def subset(self, index) -> JetArrays:
        """Jets selected by a slice, a boolean mask or an index array."""
        return JetArrays(
            constituents=self.constituents[index],
            mask=self.mask[index],
            charge=self.charge[index],
            pid=self.pid[index],
            label=self.label[index],
            class_names=list(self.class_names),
            metadata=dict(self.metadata),
        )

    def sorted_by_pt(self) -> JetArrays:
        """The same jets with constituents pT-ordered (hardest first, padding last); self if they are.

        Stable, so ties keep their order. Files from elsewhere need not be ordered, and what reads
        a jet's particles in order (a tokenizer's rank embedding, cutting to the hardest N) expects it.
        """
        pt = np.where(self.mask, np.hypot(self.constituents[..., 1], self.constituents[..., 2]), -1.0)  # (J, N)
        if (pt[:, :-1] >= pt[:, 1:]).all():
            return self
        order = np.argsort(-pt, axis=1, kind="stable")  # (J, N)

        def take(a: np.ndarray) -> np.ndarray:
            return np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), axis=1)

        return JetArrays(
            np.ascontiguousarray(take(self.constituents)),
            take(self.mask),
            take(self.charge),
            take(self.pid),
            self.label,
            list(self.class_names),
            dict(self.metadata),
        )

    def padded_to(self, max_particles: int) -> JetArrays:
        """Cut (keeping the hardest) or zero-pad the particle axis to `max_particles`."""
        n = self.max_particles
        if n == max_particles:
            return self
        if n > max_particles:
            cut = slice(0, max_particles)
            return JetArrays(
                self.constituents[:, cut],
                self.mask[:, cut],
                self.charge[:, cut],
                self.pid[:, cut],
                self.label,
                list(self.class_names),
                dict(self.metadata),
            )
        extra = max_particles - n

        def pad(a: np.ndarray) -> np.ndarray:
            widths = [(0, 0), (0, extra)] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, widths)

        return JetArrays(
            pad(self.constituents),
            pad(self.mask),
            pad(self.charge),
            pad(self.pid),
            self.label,
            list(self.class_names),
            dict(self.metadata),
        )

    @staticmethod
    def concatenate(parts: list[JetArrays]) -> JetArrays:
        """Join jets of several sets; the particle axis is padded to the widest."""
        if not parts:
            raise ValueError("no jets to concatenate")
        names = parts[0].class_names
        for p in parts[1:]:
            if p.class_names != names:
                raise ValueError(f"cannot join jets with classes {names} and {p.class_names}")
        width = max(p.max_particles for p in parts)
        parts = [p.padded_to(width) for p in parts]
        return JetArrays(
            np.concatenate([p.constituents for p in parts]),
            np.concatenate([p.mask for p in parts]),
            np.concatenate([p.charge for p in parts]),
            np.concatenate([p.pid for p in parts]),
            np.concatenate([p.label for p in parts]),
            list(names),
            dict(parts[0].metadata),
        )

    def validate(self, source: str | Path) -> None:
        """Raise DataFormatError naming `source`, the field and the jet if the arrays are unusable:
        wrong shapes, labels outside the classes, or physically impossible jets (`physics_problems`)."""
        self.check_shapes(source)
        bad, first = self.physics_problems()
        if first is not None:
            index = int(np.flatnonzero(bad)[0])
            field_name, problem = first
            count = int(bad.sum())
            raise DataFormatError(source, field_name, f"jet {index} {problem} ({count} of {len(self)} jets cannot be real; `foundation data convert --drop-invalid` drops them)")
        self.check_labels(source)

    def check_shapes(self, source: str | Path) -> None:
        j = len(self)
        c = self.constituents
        if c.ndim != 3 or c.shape[2] != 4:
            raise DataFormatError(source, "constituents", f"expected shape (jets, particles, 4), got {c.shape}")
        for name, arr, ndim in (("mask", self.mask, 2), ("charge", self.charge, 2), ("pid", self.pid, 2)):
            if arr.ndim != ndim or arr.shape != c.shape[:2]:
                raise DataFormatError(source, name, f"expected shape {c.shape[:2]}, got {arr.shape}")
        if self.label.shape != (j,):
            raise DataFormatError(source, "label", f"expected shape ({j},), got {self.label.shape}")

    def check_labels(self, source: str | Path) -> None:
        if len(self) and (self.label.min() < 0 or self.label.max() >= len(self.class_names)):
            bad = int(np.flatnonzero((self.label < 0) | (self.label >= len(self.class_names)))[0])
            raise DataFormatError(
                source,
                "label",
                f"label {int(self.label[bad])} of jet {bad} is outside the {len(self.class_names)} classes {self.class_names}",
            )

    def physics_problems(self) -> tuple[np.ndarray, tuple[str, str] | None]:
        """(J,) bool: jets that cannot be real; and (field, what is wrong) of the first of them.

        Refused: NaN or inf momenta; a component beyond MAX_MOMENTUM_GEV; a real particle (mask
        True) with negative energy or zero momentum; a particle with non-zero momentum that the mask
        marks as padding (it would silently vanish from every feature); a jet with no particle.
        """
        c, mask = self.constituents, self.mask
        nonzero = (c != 0).any(axis=2)  # (J, N)
        with np.errstate(invalid="ignore"):
            checks = (
                ("constituents", ~np.isfinite(c).all(axis=2), "has NaN or inf momenta"),
                ("constituents", (np.abs(c) > MAX_MOMENTUM_GEV).any(axis=2), f"has a momentum component beyond {MAX_MOMENTUM_GEV:.0e} GeV"),
                ("constituents", mask & (c[..., 0] < 0), "has a particle with negative energy"),
                ("mask", mask & ~nonzero, "has a particle marked real (mask True) with zero momentum"),
                ("mask", ~mask & nonzero, "has a particle with non-zero momentum marked as padding (mask False)"),
                ("mask", ~mask.any(axis=1, keepdims=True), "has zero constituents"),
            )
        bad = np.zeros(len(self), bool)
        first: tuple[int, str, str] | None = None
        for field_name, per_particle, problem in checks:
            jets = per_particle.any(axis=1)  # (J,)
            if jets.any():
                i = int(np.flatnonzero(jets)[0])
                if first is None or i < first[0]:
                    first = (i, field_name, problem)
                bad |= jets
        return bad, (first[1], first[2]) if first else None

    def without_invalid(self) -> tuple[JetArrays, int]:
        """The jets that pass `physics_problems`, and how many were dropped."""
        bad, _ = self.physics_problems()
        return (self.subset(~bad) if bad.any() else self), int(bad.sum())


def class_index(name: int | str, class_names: Sequence[str]) -> int:
    """The index of a class given by name or by index, checked against `class_names`.

    Raises ValueError naming the class and the classes there are; callers at a boundary (a recipe,
    a command line) add the file and key.
    """
    names = list(class_names)
    if isinstance(name, str):
        if name not in names:
            raise ValueError(f"class {name!r} is not one of {names}")
        return names.index(name)
    if not 0 <= int(name) < len(names):
        raise ValueError(f"class index {name} is outside the {len(names)} classes {names}")
    return int(name)


def jet_kinematics(constituents: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Jet 4-vector summed over the real constituents: pt, eta, phi, mass, energy, multiplicity.

    constituents: (J, N, 4) E, px, py, pz; mask: (J, N).
    """
    p = np.where(mask[..., None], constituents, 0.0).astype(np.float64).sum(axis=1)  # (J, 4)
    e, px, py, pz = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    pt = np.hypot(px, py)
    mass = np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0.0, None))
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
    phi = np.arctan2(py, px)
    return {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "mass": mass,
        "energy": e,
        "multiplicity": mask.sum(axis=1).astype(np.int64),
    }
