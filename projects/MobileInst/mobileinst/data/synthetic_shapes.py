"""Drawing of the synthetic shapes data: objects, backgrounds, scenes and videos.

Simple, clearly distinguishable shapes (:data:`SYNTHETIC_CATEGORIES`) on
textured random backgrounds, drawn from a ``numpy.random.Generator`` only, so
that the same generator state gives the same pixels and masks.
:mod:`mobileinst.data.synthetic` writes them as COCO / YouTube-VIS data sets.

Shape classes are defined only by geometry: every class uses random colours and
textures (solid, gradient, stripes, low-frequency noise) with random rotation
and size (about 8%..45% of the short image side).  Backgrounds are smooth
gradients plus low-contrast noise, stripes, checker patterns or blurred blobs.
Masks are drawn without antialiasing (``cv2.fillPoly`` on a uint8 mask) and the
object texture is painted through that mask, so mask and pixels agree exactly
(up to the mild blur and noise applied to the whole image).

Objects are drawn in order; later objects occlude earlier ones.  Every mask is
the *visible* part of its object.  An object counts as visible only when its
visible area is at least ``MIN_VISIBLE_AREA`` (30) pixels and at least
``MIN_VISIBLE_FRACTION`` (25%) of its full (unoccluded, unclipped) area;
otherwise it is dropped (:func:`make_image`) or None in that frame
(:func:`make_video`).

* :func:`make_image`: one image and its visible objects; about 5% of the
  images have none.
* :func:`make_video`: the frames of one clip and one track per object.
  Objects move with their own velocity (a few % of the image size per frame),
  slowly rotate and scale, some enter or leave the frame, and they pass in
  front of each other.  The background either stays or drifts slowly.
* :func:`make_showcase_video`: one longer scripted clip (make demo's showcase):
  objects that cross (two of one class among them), pass behind another,
  leave the frame and come back.
"""

from __future__ import annotations

import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "MIN_VISIBLE_AREA",
    "MIN_VISIBLE_FRACTION",
    "make_image",
    "make_video",
    "make_showcase_video",
]

SYNTHETIC_CATEGORIES: List[Dict] = [
    {"id": 1, "name": "circle"},
    {"id": 2, "name": "square"},
    {"id": 3, "name": "triangle"},
    {"id": 4, "name": "star"},
    {"id": 5, "name": "ring"},
]

MIN_VISIBLE_AREA = 30
MIN_VISIBLE_FRACTION = 0.25

EMPTY_IMAGE_PROB = 0.05
SIZE_RANGE = (0.08, 0.45)  # object extent (diameter) relative to the short side

_CIRCLE_VERTS = 64
_SHIFT = 4  # fixed-point bits for cv2.fillPoly (sub-pixel positions)
_SCALE = float(1 << _SHIFT)


# ----------------------------------------------------------------------------
# colours and visibility
# ----------------------------------------------------------------------------
def _random_color(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.1:
        g = rng.uniform(20, 235)
        return np.array([g, g, g], dtype=np.float32)
    h = rng.random()
    s = rng.uniform(0.25, 1.0)
    v = rng.uniform(0.3, 1.0)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return np.array([b * 255, g * 255, r * 255], dtype=np.float32)  # BGR


def _is_visible(vis_area: int, full_area: float) -> bool:
    return vis_area >= MIN_VISIBLE_AREA and vis_area >= MIN_VISIBLE_FRACTION * full_area


# ----------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------
def _circle(radius: float, n: int = _CIRCLE_VERTS) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], 1) * radius


def _shape_polys(cat_id: int, rng: np.random.Generator) -> List[Tuple[np.ndarray, int]]:
    """Unit-size shape (extent radius ~1) as [(polygon Nx2, fill value)]."""
    if cat_id == 1:  # circle
        return [(_circle(1.0), 1)]
    if cat_id == 2:  # square (circumradius ~1.1)
        a = 0.78
        return [(np.array([[-a, -a], [a, -a], [a, a], [-a, a]], dtype=np.float64), 1)]
    if cat_id == 3:  # equilateral triangle
        ang = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [(np.stack([np.cos(ang), np.sin(ang)], 1) * 1.12, 1)]
    if cat_id == 4:  # five-pointed star
        inner = rng.uniform(0.42, 0.52)
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.12, 1.12 * inner)
        return [(np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1), 1)]
    if cat_id == 5:  # ring (annulus)
        inner = rng.uniform(0.45, 0.62)
        return [(_circle(1.0), 1), (_circle(inner), 0)]
    raise ValueError(f"unknown category id {cat_id}")


def _unit_area(polys: Sequence[Tuple[np.ndarray, int]]) -> float:
    area = 0.0
    for p, val in polys:
        a = abs(cv2.contourArea(p.astype(np.float32)))
        area += a if val else -a
    return area


class _Obj:
    """A shape instance: class, geometry (unit polygons) and texture."""

    def __init__(self, rng: np.random.Generator, cat_id: int, radius: float):
        self.cat_id = cat_id
        self.polys = _shape_polys(cat_id, rng)
        self.unit_area = _unit_area(self.polys)
        self.radius = radius
        self.ext = max(float(np.linalg.norm(p, axis=1).max()) for p, _ in self.polys)
        # texture
        self.tex = rng.choice(["solid", "gradient", "stripes", "noise"], p=[0.3, 0.25, 0.2, 0.25])
        self.c1 = _random_color(rng)
        self.delta = rng.uniform(35, 90) * rng.choice([-1.0, 1.0], size=3) * rng.uniform(0.4, 1.0, size=3)
        self.tex_angle = rng.uniform(0, np.pi)
        self.period = rng.uniform(0.3, 0.7)
        self.duty = rng.uniform(0.35, 0.65)
        self.noise = rng.normal(0, 1, size=(6, 6, 3)).astype(np.float32) * np.float32(rng.uniform(15, 40))
        self.shade = rng.uniform(0.0, 0.18)
        self.shade_angle = rng.uniform(0, 2 * np.pi)

    def set_base_color(self, c: np.ndarray) -> None:
        self.c1 = c

    def mean_color(self) -> np.ndarray:
        if self.tex in ("gradient", "stripes"):
            return np.clip(self.c1 + 0.5 * self.delta, 0, 255)
        return self.c1

    # geometry -----------------------------------------------------------
    def masks(self, H: int, W: int, cx: float, cy: float, r: float, theta: float):
        """Full (clipped to the image) mask and its bbox (x0, y0, x1, y1) or None."""
        ext = self.ext * r + 2
        x0, x1 = int(max(0, np.floor(cx - ext))), int(min(W, np.ceil(cx + ext) + 1))
        y0, y1 = int(max(0, np.floor(cy - ext))), int(min(H, np.ceil(cy + ext) + 1))
        if x0 >= x1 or y0 >= y1:
            return None, None
        c, s = np.cos(theta), np.sin(theta)
        rot = np.array([[c, -s], [s, c]]) * r
        mask = np.zeros((H, W), np.uint8)
        for p, val in self.polys:
            pts = p @ rot.T + np.array([cx, cy])
            pts = np.round(pts * _SCALE).astype(np.int32)
            cv2.fillPoly(mask, [pts], int(val), lineType=cv2.LINE_8, shift=_SHIFT)
        return mask, (x0, y0, x1, y1)

    def full_area(self, r: float) -> float:
        return self.unit_area * r * r

    # appearance ---------------------------------------------------------
    def texture(self, box, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
        x0, y0, x1, y1 = box
        dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
        c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        u = (dx * c + dy * s) / np.float32(r)
        v = (-dx * s + dy * c) / np.float32(r)
        h, w = y1 - y0, x1 - x0
        ca, sa = np.float32(np.cos(self.tex_angle)), np.float32(np.sin(self.tex_angle))
        t = u * ca + v * sa
        c1 = self.c1.astype(np.float32)
        d = self.delta.astype(np.float32)
        if self.tex == "solid":
            tex = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
        elif self.tex == "gradient":
            f = np.clip((t + 1) * 0.5, 0, 1)[..., None]
            tex = c1 + f * d
        elif self.tex == "stripes":
            f = ((t / np.float32(self.period)) % 1.0 < self.duty).astype(np.float32)[..., None]
            tex = c1 + f * d
        else:  # noise (object-local, moves with the object)
            n = self.noise.shape[0]
            mx = np.ascontiguousarray(((u + 1.3) / 2.6 * (n - 1)).astype(np.float32))
            my = np.ascontiguousarray(((v + 1.3) / 2.6 * (n - 1)).astype(np.float32))
            mx = np.broadcast_to(mx, (h, w)).copy()
            my = np.broadcast_to(my, (h, w)).copy()
            tex = c1 + cv2.remap(self.noise, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        shade = 1.0 + np.float32(self.shade) * (
            u * np.float32(np.cos(self.shade_angle)) + v * np.float32(np.sin(self.shade_angle))
        )
        return tex * shade[..., None]


def _pick_contrasting_color(rng: np.random.Generator, obj: _Obj, bg_mean: np.ndarray) -> None:
    best, best_d = None, -1.0
    for _ in range(8):
        obj.set_base_color(_random_color(rng))
        d = float(np.linalg.norm(obj.mean_color() - bg_mean))
        if d > best_d:
            best, best_d = obj.c1, d
        if d >= 70:
            return
    obj.set_base_color(best)


def _sample_radius(rng: np.random.Generator, short_side: int) -> float:
    lo, hi = SIZE_RANGE
    d = np.exp(rng.uniform(np.log(lo), np.log(hi))) * short_side
    return d / 2.0


# ----------------------------------------------------------------------------
# backgrounds
# ----------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, H: int, W: int, cells: int, channels: int = 3) -> np.ndarray:
    g = rng.normal(0, 1, size=(cells, cells, channels)).astype(np.float32)
    out = cv2.resize(g, (W, H), interpolation=cv2.INTER_CUBIC)
    return out.reshape(H, W, channels)


def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    c0 = _random_color(rng) * np.float32(0.8) + np.float32(25)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    t = (xx * np.cos(ang) + yy * np.sin(ang)) / max(H, W)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c1 = c0 + rng.normal(0, 30, size=3).astype(np.float32)
    img = c0 + t[..., None] * (c1 - c0)
    kinds = rng.choice(["noise", "stripes", "checker", "blobs", "plain"], size=2, replace=False,
                       p=[0.28, 0.2, 0.17, 0.25, 0.1])
    for kind in kinds:
        if kind == "noise":
            cells = int(rng.integers(4, 24))
            img += _smooth_noise(rng, H, W, cells) * np.float32(rng.uniform(6, 16))
        elif kind == "stripes":
            a = rng.uniform(0, np.pi)
            period = rng.uniform(6, 40)
            u = xx * np.cos(a) + yy * np.sin(a)
            wave = np.sin(2 * np.pi * u / period)
            if rng.random() < 0.5:
                wave = np.sign(wave)
            amp = rng.normal(0, 1, size=3).astype(np.float32)
            amp = amp / (np.linalg.norm(amp) + 1e-6) * np.float32(rng.uniform(8, 20))
            img += wave[..., None] * amp
        elif kind == "checker":
            a = rng.uniform(0, np.pi / 2)
            cell = rng.uniform(8, 40)
            u = (xx * np.cos(a) + yy * np.sin(a)) / cell
            v = (-xx * np.sin(a) + yy * np.cos(a)) / cell
            chk = ((np.floor(u) + np.floor(v)) % 2 * 2 - 1).astype(np.float32)
            img += chk[..., None] * np.float32(rng.uniform(5, 14))
        elif kind == "blobs":
            h4, w4 = max(H // 4, 8), max(W // 4, 8)
            layer = np.zeros((h4, w4, 3), np.float32)
            for _ in range(int(rng.integers(3, 9))):
                center = (int(rng.integers(0, w4)), int(rng.integers(0, h4)))
                axes = (int(rng.integers(2, max(3, w4 // 3))), int(rng.integers(2, max(3, h4 // 3))))
                col = rng.normal(0, 35, size=3)
                cv2.ellipse(layer, center, axes, float(rng.uniform(0, 180)), 0, 360,
                            tuple(float(x) for x in col), -1)
            sigma = max(h4, w4) * rng.uniform(0.03, 0.08)
            layer = cv2.GaussianBlur(layer, (0, 0), sigma)
            img += cv2.resize(layer, (W, H), interpolation=cv2.INTER_LINEAR)
    return img


def _finish(rng: np.random.Generator, img: np.ndarray, blur: float, noise: float) -> np.ndarray:
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if noise > 0:
        img = img + rng.normal(0, noise, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# scene rendering (shared by images and videos)
# ----------------------------------------------------------------------------
def _render(bg: np.ndarray, states) -> Tuple[np.ndarray, List[Optional[np.ndarray]]]:
    """Paint objects in order.  ``states`` = [(obj, cx, cy, r, theta)].

    Returns the float image and the visible mask (bool HxW) of every object, or
    None where the object is entirely off-screen.
    """
    H, W = bg.shape[:2]
    img = bg.copy()
    fulls = []
    for obj, cx, cy, r, th in states:
        mask, box = obj.masks(H, W, cx, cy, r, th)
        fulls.append(mask)
        if mask is None:
            continue
        x0, y0, x1, y1 = box
        m = mask[y0:y1, x0:x1].astype(bool)
        if not m.any():
            continue
        tex = obj.texture(box, cx, cy, r, th)
        img[y0:y1, x0:x1][m] = tex[m]
    vis: List[Optional[np.ndarray]] = [None] * len(states)
    cover = np.zeros((H, W), bool)
    for i in range(len(states) - 1, -1, -1):
        if fulls[i] is None:
            continue
        f = fulls[i].astype(bool)
        vis[i] = f & ~cover
        cover |= f
    return img, vis


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------
def make_image(rng: np.random.Generator, H: int, W: int, min_objects: int, max_objects: int):
    """One (H, W) image with ``min_objects``..``max_objects`` objects (none with
    probability ``EMPTY_IMAGE_PROB``), placed so that most stay visible.

    Returns the uint8 BGR image and [(category id, visible mask (H, W) bool)]
    of its visible objects."""
    S = min(H, W)
    bg = _background(rng, H, W)
    if rng.random() < EMPTY_IMAGE_PROB or max_objects <= 0:
        n = 0
    else:
        n = int(rng.integers(max(min_objects, 0), max_objects + 1))
    states = []
    fulls: List[np.ndarray] = []
    full_areas: List[float] = []
    for _ in range(n):
        cat = int(rng.integers(1, len(SYNTHETIC_CATEGORIES) + 1))
        obj = _Obj(rng, cat, _sample_radius(rng, S))
        r = obj.radius
        strict = rng.random() > 0.05  # rarely allow heavy occlusion / clipping
        placed = None
        for _try in range(20):
            cx = rng.uniform(0.3 * r, W - 0.3 * r)
            cy = rng.uniform(0.3 * r, H - 0.3 * r)
            th = rng.uniform(0, 2 * np.pi)
            mask, _box = obj.masks(H, W, cx, cy, r, th)
            if mask is None:
                continue
            m = mask.astype(bool)
            fa = obj.full_area(r)
            if m.sum() < 0.6 * fa and strict:
                continue
            ok = True
            if strict:
                cover = m.copy()
                for j in range(len(fulls) - 1, -1, -1):
                    vis_j = fulls[j] & ~cover
                    if vis_j.sum() < 0.5 * full_areas[j]:
                        ok = False
                        break
                    cover |= fulls[j]
            if ok:
                placed = (cx, cy, th, m, fa)
                break
        if placed is None:
            continue
        cx, cy, th, m, fa = placed
        # colour that stands out from the local background
        bg_mean = bg[m].mean(0) if m.any() else bg.reshape(-1, 3).mean(0)
        _pick_contrasting_color(rng, obj, bg_mean)
        states.append((obj, cx, cy, r, th))
        fulls.append(m)
        full_areas.append(fa)
    img, vis = _render(bg, states)
    blur = rng.uniform(0.3, 0.8) if rng.random() < 0.7 else 0.0
    img = _finish(rng, img, blur, rng.uniform(1.0, 5.0))
    anns = []
    for (obj, cx, cy, r, th), v in zip(states, vis):
        if v is None:
            continue
        a = int(v.sum())
        if not _is_visible(a, obj.full_area(r)):
            continue
        anns.append((obj.cat_id, v))
    return img, anns


# ----------------------------------------------------------------------------
# videos
# ----------------------------------------------------------------------------
class _Track:
    def __init__(self, obj: _Obj, pos: np.ndarray, r: np.ndarray, theta: np.ndarray):
        self.obj, self.pos, self.r, self.theta = obj, pos, r, theta


def _border_point(rng: np.random.Generator, H: int, W: int):
    side = int(rng.integers(0, 4))
    f = rng.uniform(0.15, 0.85)
    if side == 0:
        return np.array([f * W, 0.0]), np.array([0.0, 1.0])  # top, inward normal
    if side == 1:
        return np.array([f * W, float(H)]), np.array([0.0, -1.0])
    if side == 2:
        return np.array([0.0, f * H]), np.array([1.0, 0.0])
    return np.array([float(W), f * H]), np.array([-1.0, 0.0])


def _make_track(rng: np.random.Generator, H: int, W: int, T: int, others: List[_Track]) -> _Track:
    S = min(H, W)
    cat = int(rng.integers(1, len(SYNTHETIC_CATEGORIES) + 1))
    r0 = _sample_radius(rng, S)
    r0 = min(r0, 0.19 * S)  # leave room to move
    obj = _Obj(rng, cat, r0)
    t = np.arange(T, dtype=np.float64)
    # scale and rotation
    grow = rng.uniform(-0.015, 0.015) if rng.random() < 0.6 else 0.0
    lo, hi = SIZE_RANGE[0] * S / 2, SIZE_RANGE[1] * S / 2
    r = np.clip(r0 * (1.0 + grow) ** t, lo, hi)
    omega = np.deg2rad(rng.uniform(-5, 5)) if rng.random() < 0.7 else 0.0
    theta = rng.uniform(0, 2 * np.pi) + omega * t
    speed = rng.uniform(0.005, 0.035) * S
    mode = rng.choice(["inside", "enter", "leave"], p=[0.55, 0.25, 0.2])
    if mode in ("enter", "leave") and T >= 4:
        b, nrm = _border_point(rng, H, W)
        tang = np.array([-nrm[1], nrm[0]])
        direction = nrm * rng.uniform(0.7, 1.0) + tang * rng.uniform(-0.5, 0.5)
        direction /= np.linalg.norm(direction)
        speed = max(speed, 0.02 * S)
        vel = direction * speed
        if mode == "enter":
            te = rng.uniform(1.0, max(1.5, T * 0.6))
            pos = b[None] + vel[None] * (t - te)[:, None]
        else:
            tx = rng.uniform(T * 0.35, T - 1.5)
            pos = b[None] - vel[None] * (t - tx)[:, None]
    else:
        p = np.array([rng.uniform(r0, W - r0), rng.uniform(r0, H - r0)])
        ang = rng.uniform(0, 2 * np.pi)
        if others and rng.random() < 0.5:  # head towards another object -> occlusion
            tgt = others[int(rng.integers(0, len(others)))].pos[T // 2]
            d = tgt - p
            if np.linalg.norm(d) > 1:
                ang = np.arctan2(d[1], d[0]) + rng.uniform(-0.3, 0.3)
                speed = min(max(speed, np.linalg.norm(d) / max(T, 1) * 1.2), 0.035 * S)
        vel = np.array([np.cos(ang), np.sin(ang)]) * speed
        pos = np.zeros((T, 2))
        for i in range(T):
            pos[i] = p
            p = p + vel
            for k, lim in ((0, W), (1, H)):  # bounce off the walls
                lo_k, hi_k = 0.6 * r0, lim - 0.6 * r0
                if p[k] < lo_k:
                    p[k], vel[k] = 2 * lo_k - p[k], -vel[k]
                elif p[k] > hi_k:
                    p[k], vel[k] = 2 * hi_k - p[k], -vel[k]
    return _Track(obj, pos, r, theta)


def make_video(rng: np.random.Generator, H: int, W: int, T: int, min_objects: int, max_objects: int):
    """``T`` frames (H, W) of one clip with ``min_objects``..``max_objects`` moving
    objects on a still or slowly drifting background.

    Returns the uint8 BGR frames and per object (category id, [visible mask
    (H, W) bool, or None where it is not visible] * T)."""
    S = min(H, W)
    m = max(2, int(np.ceil(0.06 * S)))
    big = _background(rng, H + 2 * m, W + 2 * m)
    if rng.random() < 0.5:
        bv = rng.uniform(-1, 1, size=2) * 0.005 * S
        bv = np.clip(bv, -2 * m / max(T - 1, 1), 2 * m / max(T - 1, 1))
    else:
        bv = np.zeros(2)
    o0 = np.array([rng.uniform(0, 2 * m - abs(bv[0]) * (T - 1)),
                   rng.uniform(0, 2 * m - abs(bv[1]) * (T - 1))])
    o0 += np.where(bv < 0, -bv * (T - 1), 0.0)
    n = int(rng.integers(max(min_objects, 1), max(max_objects, 1) + 1))
    tracks: List[_Track] = []
    for _ in range(n):
        tracks.append(_make_track(rng, H, W, T, tracks))
    # colours contrasting with the background mean
    bg_mean = big.reshape(-1, 3).mean(0)
    for tr in tracks:
        _pick_contrasting_color(rng, tr.obj, bg_mean)
    blur = rng.uniform(0.3, 0.7) if rng.random() < 0.7 else 0.0
    noise = rng.uniform(1.0, 4.0)
    frames = []
    vis_all = [[None] * T for _ in tracks]
    for f in range(T):
        ox, oy = np.clip(np.round(o0 + bv * f).astype(int), 0, 2 * m)
        bg = big[oy:oy + H, ox:ox + W]
        states = [(tr.obj, tr.pos[f, 0], tr.pos[f, 1], tr.r[f], tr.theta[f]) for tr in tracks]
        img, vis = _render(bg, states)
        frames.append(_finish(rng, img, blur, noise))
        for k, (tr, v) in enumerate(zip(tracks, vis)):
            if v is None:
                continue
            a = int(v.sum())
            if _is_visible(a, tr.obj.full_area(tr.r[f])):
                vis_all[k][f] = v
    return frames, [(tr.obj.cat_id, vis_all[k]) for k, tr in enumerate(tracks)]


# ----------------------------------------------------------------------------
# the showcase clip
# ----------------------------------------------------------------------------
# Each object: (category id, radius as a fraction of the short side, rotation
# in degrees per frame, waypoints (frame, x / W, y / H)). Objects are drawn in
# this order, so a later one passes in front of an earlier one. x outside
# [0, 1] is outside the frame.
SHOWCASE_SCRIPT = (
    # two circles that cross each other (same class) in the middle
    (1, 0.10, 0.0, ((0, 0.12, 0.30), (1.0, 0.88, 0.62))),
    (1, 0.09, 0.0, ((0, 0.88, 0.30), (1.0, 0.12, 0.66))),
    # a ring that passes behind the big square
    (5, 0.07, 2.0, ((0, 0.12, 0.76), (1.0, 0.88, 0.76))),
    # a star that leaves through the right edge and comes back
    (4, 0.09, 3.0, ((0, 0.70, 0.12), (0.30, 1.18, 0.12), (0.55, 1.18, 0.16), (0.85, 0.72, 0.16),
                    (1.0, 0.60, 0.14))),
    # a triangle entering from the left after the start
    (3, 0.085, -2.0, ((0, -0.15, 0.50), (0.25, -0.15, 0.50), (0.60, 0.30, 0.45), (1.0, 0.40, 0.20))),
    # the big square in front, drifting slowly
    (2, 0.14, 0.5, ((0, 0.46, 0.78), (1.0, 0.56, 0.74))),
)


def make_showcase_video(rng: np.random.Generator, H: int = 360, W: int = 480, T: int = 120):
    """The showcase clip: ``T`` frames (H, W) of the objects of
    :data:`SHOWCASE_SCRIPT` moving along their waypoints (linear in between)
    on one still background: two circles cross, a ring passes behind the
    square, a star leaves the frame and comes back, a triangle enters late.
    Textures and colours come from ``rng``.

    Returns what :func:`make_video` returns: the uint8 BGR frames and per
    object (category id, [visible mask or None] * T)."""
    S = min(H, W)
    bg = _background(rng, H, W)
    bg_mean = bg.reshape(-1, 3).mean(0)
    t = np.arange(T, dtype=np.float64)
    tracks = []
    for cat, radius, spin, points in SHOWCASE_SCRIPT:
        obj = _Obj(rng, cat, radius * S)
        _pick_contrasting_color(rng, obj, bg_mean)
        times = np.array([p[0] for p in points]) * (T - 1)
        pos = np.stack([np.interp(t, times, [p[1] * W for p in points]),
                        np.interp(t, times, [p[2] * H for p in points])], 1)
        theta = rng.uniform(0, 2 * np.pi) + np.deg2rad(spin) * t
        tracks.append(_Track(obj, pos, np.full(T, radius * S), theta))
    frames = []
    vis_all = [[None] * T for _ in tracks]
    for f in range(T):
        states = [(tr.obj, tr.pos[f, 0], tr.pos[f, 1], tr.r[f], tr.theta[f]) for tr in tracks]
        img, vis = _render(bg, states)
        frames.append(_finish(rng, img, 0.5, 2.0))
        for k, (tr, v) in enumerate(zip(tracks, vis)):
            if v is not None and _is_visible(int(v.sum()), tr.obj.full_area(tr.r[f])):
                vis_all[k][f] = v
    return frames, [(tr.obj.cat_id, vis_all[k]) for k, tr in enumerate(tracks)]
