"""The argument checks every selective-scan backend runs first, so that each one rejects a bad call with the
same message (the reference loop, the specification, runs unchecked)."""

from __future__ import annotations


def check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    """ValueError naming the argument whose shape does not fit the others (shapes as in the package docstring)."""
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta shape {tuple(delta.shape)} differs from u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim={dim}, state), got shape {tuple(A.shape)}")
    state = A.shape[1]
    for name, BC in (("B", B), ("C", C)):
        if BC.dim() not in (3, 4) or BC.shape[0] != batch or BC.shape[-2] != state or BC.shape[-1] != length:
            raise ValueError(
                f"{name} must be (batch, state, length) or (batch, groups, state, length) = "
                f"({batch}, [groups,] {state}, {length}), got shape {tuple(BC.shape)}"
            )
        if BC.dim() == 4 and dim % BC.shape[1]:
            raise ValueError(f"dim {dim} is not divisible by the number of {name} groups {BC.shape[1]}")
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must have the same groups")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and tuple(v.shape) != (dim,):
            raise ValueError(f"{name} must be (dim={dim},), got shape {tuple(v.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z shape {tuple(z.shape)} differs from u shape {tuple(u.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, state):
        raise ValueError(f"initial_state must be ({batch}, {dim}, {state}), got {tuple(initial_state.shape)}")
