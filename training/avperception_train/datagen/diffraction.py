"""First-order edge diffraction: the sound a box's edges and a room's outer corners send back.

The image-source model returns an echo from a surface only where the sweep meets it at a right angle (its specular
point). A box side seen at a slant past its end, or from above the box's top, and a wall past an outer corner have
none, and are silent in pyroomacoustics. Real edges send some sound back from every side; this module adds that
sound to each source's impulse responses (:class:`~.acoustics.RoomAcoustics` with ``edge_diffraction``).

Each edge is a rigid wedge, and its impulse response the exact solution of Biot, Tolstoy and Medwin in the discrete
form of Svensson, Fred and Vanderkooy (JASA 106, 1999): each short element ``dz`` of an edge with exterior (air)
angle ``theta_w`` adds

    h(t) = -nu / (4 pi) * beta / (m l) * dz * delta(t - (m + l) / c),    nu = pi / theta_w

where ``m`` and ``l`` are the element's distances to the source and the receiver, and ``beta`` sums four terms in the
source's and receiver's angles about the edge. Elements hidden from the source by a box or a wall add nothing; the
edge's two faces scale it by their materials' reflection (as the image-source model scales a reflection). Only first
order: no diffraction of a reflection, nor reflection of a diffraction.

Where a face's specular reflection switches on or off (the array on the face's normal plane through the edge), the
element series is singular; its samples are kept within half the specular reflection, the exact value there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import RoomGeometry


@dataclass(frozen=True)
class Edge:
    """A straight edge of a wedge of air: ``start`` ``(3,)``, unit ``direction``, ``length``; ``face`` ``(3,)`` the unit
    direction, normal to the edge, along one of its two faces; ``angle`` the air's angle from that face round to the
    other (rad); ``reflection`` the amplitude its faces return (1 = rigid)."""

    start: np.ndarray
    direction: np.ndarray
    length: float
    face: np.ndarray
    angle: float
    reflection: float
    name: str = ""

    def cylindrical(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points ``(N, 3)`` about the edge: ``(N,)`` each of the position along it, the distance from its line and
        the angle from :attr:`face` through the air."""
        w = np.asarray(pts, dtype=np.float64).reshape(-1, 3) - self.start
        z = w @ self.direction
        d = w - z[:, None] * self.direction
        other = np.cross(self.direction, self.face)
        theta = np.mod(np.arctan2(d @ other, d @ self.face), 2 * np.pi)
        return z, np.linalg.norm(d, axis=1), theta


def _wedge(room: RoomGeometry, start, end, face_a, face_b, reflection: float, name: str) -> Edge | None:
    """The edge from ``start`` to ``end`` between faces leaving it along ``face_a`` and ``face_b``, oriented so that
    the air lies between them at angles ``(0, angle)``; ``None`` where neither side of it is air."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    length = float(np.linalg.norm(end - start))
    e = (end - start) / length
    a = np.asarray(face_a, dtype=np.float64)
    a = a - (a @ e) * e
    a /= np.linalg.norm(a)
    b = np.asarray(face_b, dtype=np.float64)
    mid = (start + end) / 2
    for origin, direction in ((start, e), (end, -e)):
        turned = np.cross(direction, a)
        angle = np.mod(np.arctan2(b @ turned, b @ a), 2 * np.pi)  # of the other face, turning this way round
        probe = mid + 1e-3 * (np.cos(angle / 2) * a + np.sin(angle / 2) * turned)
        if angle > 1e-6 and room.contains(probe[None])[0]:
            return Edge(origin, direction, length, a, float(angle), reflection, name)
    return None


def diffracting_edges(room: RoomGeometry, reflection=lambda material: 1.0) -> list[Edge]:
    """The room's edges that jut into the air: every box's four upright and four top edges, and the walls' outer
    (reflex) corners. A box's bottom edges and the room's inner corners are corners of the air, which the image
    sources already model. ``reflection(material)`` is a face's amplitude; an edge takes the mean of its two faces'."""
    out = []
    f, h = room.floor, room.height
    n = len(f)
    for i in range(n):
        prev, here, nxt = f[i - 1], f[i], f[(i + 1) % n]
        a, b = here - prev, nxt - here
        if a[0] * b[1] - a[1] * b[0] < 0:  # a right turn of a counter-clockwise plan: the wall juts into the room
            r = (reflection(room.wall_materials[i - 1]) + reflection(room.wall_materials[i])) / 2
            e = _wedge(room, [*here, 0.0], [*here, h], [*(nxt - here), 0.0], [*(prev - here), 0.0], r, f"corner{i}")
            if e is not None:
                out.append(e)
    for k, bx in enumerate(room.boxes):
        fp = bx.footprint()
        r = reflection(bx.material)
        centre = fp.mean(axis=0)
        for i in range(4):
            here, nxt, prev = fp[i], fp[(i + 1) % 4], fp[i - 1]
            e = _wedge(room, [*here, 0.0], [*here, bx.height], [*(nxt - here), 0.0], [*(prev - here), 0.0], r,
                       f"box{k}_upright{i}")
            if e is not None:
                out.append(e)
            mid = (here + nxt) / 2
            e = _wedge(room, [*here, bx.height], [*nxt, bx.height], [*(centre - mid), 0.0], [0.0, 0.0, -1.0], r,
                       f"box{k}_top{i}")
            if e is not None:
                out.append(e)
    return out


def _clear(room: RoomGeometry, origin: np.ndarray, pts: np.ndarray, margin: float = 2e-3) -> np.ndarray:
    """``(N,)`` bool: the segments from ``origin`` ``(3,)`` to ``pts`` ``(N, 3)``, their last ``margin`` metres left
    out, cross no box and no wall."""
    d = pts - origin
    length = np.linalg.norm(d, axis=1)
    t_end = np.clip(1 - margin / np.maximum(length, 1e-9), 0, 1)
    ok = np.ones(len(pts), dtype=bool)
    # walls: the floor plan's sides, crossed in the plane (walls are full height)
    a = room.floor
    b = np.roll(a, -1, axis=0)
    p0, r = origin[:2], d[:, :2] * t_end[:, None]
    s = b - a
    den = r[:, None, 0] * s[None, :, 1] - r[:, None, 1] * s[None, :, 0]
    q = a[None] - p0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (q[..., 0] * s[None, :, 1] - q[..., 1] * s[None, :, 0]) / den
        u = (q[..., 0] * r[:, None, 1] - q[..., 1] * r[:, None, 0]) / den
    ok &= ~np.any((np.abs(den) > 1e-12) & (t > 0) & (t < 1) & (u >= 0) & (u <= 1), axis=1)
    # boxes: slabs in each box's own frame
    for bx in room.boxes:
        c, sn = np.cos(bx.yaw), np.sin(bx.yaw)
        rot = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1.0]])  # columns: the box's axes in the world
        o = (origin - np.array([*bx.center, 0.0])) @ rot
        v = d @ rot
        lo = np.array([-bx.size[0] / 2, -bx.size[1] / 2, 0.0])
        hi = np.array([bx.size[0] / 2, bx.size[1] / 2, bx.height])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / v, (hi - o) / v
        inside_slab = (o >= lo) & (o <= hi)  # for a component of v that is 0
        t_near = np.where(v == 0, np.where(inside_slab, -np.inf, np.inf), np.minimum(t1, t2)).max(axis=1)
        t_far = np.where(v == 0, np.where(inside_slab, np.inf, -np.inf), np.maximum(t1, t2)).min(axis=1)
        ok &= ~((t_near < t_far) & (t_far > 0) & (t_near < t_end))
    return ok


def edge_diffraction(room: RoomGeometry, source: np.ndarray, mics: np.ndarray, fs: int, c: float,
                     gain: float = 1.0, step: float = 0.005, reflection=lambda material: 1.0) -> np.ndarray:
    """``(M, L)`` first-order edge-diffraction impulse responses from ``source`` ``(3,)`` to ``mics`` ``(M, 3)``.

    Sample 0 is the emission; ``gain`` is the amplitude of the direct sound at 1 m in the caller's convention (the
    result adds to :class:`~.acoustics.RoomAcoustics`' impulse responses with ``distance_gain``). Edges are cut into
    elements of at most ``step`` metres; visibility is tested from the source (the microphones are beside it).
    """
    source = np.asarray(source, dtype=np.float64).reshape(3)
    mics = np.asarray(mics, dtype=np.float64).reshape(-1, 3)
    parts = []
    for edge in diffracting_edges(room, reflection):
        if edge.reflection <= 0:
            continue
        k = max(1, int(np.ceil(edge.length / step)))
        dz = edge.length / k
        z = (np.arange(k) + 0.5) * dz
        pts = edge.start + z[:, None] * edge.direction
        seen = _clear(room, source, pts)
        if not seen.any():
            continue
        z, pts = z[seen], pts[seen]
        nu = np.pi / edge.angle
        zs, rs, ts = edge.cylindrical(source[None])
        zr, rr, tr = edge.cylindrical(mics)
        m = np.linalg.norm(pts - source, axis=1)[None]  # (1, K)
        l = np.linalg.norm(pts[None] - mics[:, None], axis=2)  # (M, K)
        cosh_eta = (m * l + (z[None] - zs[0]) * (z[None] - zr[:, None])) / (rs[0] * rr[:, None])
        ch = np.cosh(nu * np.arccosh(np.maximum(cosh_eta, 1.0)))
        beta = np.zeros_like(l)
        for phi in (np.pi + ts[0] + tr, np.pi + ts[0] - tr, np.pi - ts[0] + tr, np.pi - ts[0] - tr):
            with np.errstate(divide="ignore", invalid="ignore"):
                term = np.sin(nu * phi)[:, None] / (ch - np.cos(nu * phi)[:, None])
            beta += np.nan_to_num(term, nan=0.0, posinf=0.0, neginf=0.0)
        amp = -gain * edge.reflection * nu / (4 * np.pi) * beta / (m * l) * dz
        delay = (m + l) / c * fs
        # the specular reflection's amplitude at the edge's nearest path: half of it bounds each sample
        bound = 0.5 * gain * edge.reflection / np.min(m + l, axis=1, keepdims=True)
        parts.append((amp, delay, bound))
    if not parts:
        return np.zeros((len(mics), 1))
    length = int(np.ceil(max(d.max() for _, d, _ in parts))) + 2
    h = np.zeros((len(mics), length))
    rows = np.arange(len(mics))[:, None]
    for amp, delay, bound in parts:
        one = np.zeros_like(h)
        i0 = np.floor(delay).astype(np.int64)
        frac = delay - i0
        np.add.at(one, (np.broadcast_to(rows, i0.shape), i0), amp * (1 - frac))
        np.add.at(one, (np.broadcast_to(rows, i0.shape), i0 + 1), amp * frac)
        h += np.clip(one, -bound, bound)
    return h
