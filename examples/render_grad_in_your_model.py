"""Using ``diffbmp_jax.render`` as a differentiable layer inside your own JAX code.

A tiny "model" (a Flax-free MLP written with plain jnp) maps a latent vector to
the parameters of N stamps; the stamps are rendered, composed over a
background, and a loss on the image is differentiated with respect to the
MLP weights -- ``render`` is just another pure JAX function under ``jit`` and
``grad``. Run: ``python examples/render_grad_in_your_model.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import diffbmp_jax as db

H = W = 32
N = 16


def disc_atlas(size: int = 16) -> db.Atlas:
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    return db.Atlas.from_arrays((xx ** 2 + yy ** 2 < 0.9).astype(np.float32))


def init_mlp(key, sizes=(8, 64, N * 8)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp_to_primitives(weights, z) -> db.Primitives:
    """Latent ``z [8]`` -> ``N`` primitives (positions squashed into the canvas)."""
    h = z
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i < len(weights) - 1:
            h = jax.nn.gelu(h)
    h = h.reshape(N, 8)
    return db.Primitives(
        xy=jax.nn.sigmoid(h[:, :2]) * jnp.array([W, H], jnp.float32),
        scale=2.0 + 6.0 * jax.nn.sigmoid(h[:, 2]),
        rotation=h[:, 3],
        opacity_logit=h[:, 4],
        color_logit=h[:, 5:8],
    )


def main(steps: int = 60, backend: str = "auto") -> float:
    atlas = disc_atlas()
    ys, xs = np.mgrid[0:H, 0:W] / H
    target = jnp.asarray(np.stack([xs, ys, 1 - xs], -1), jnp.float32)  # a colour ramp
    z = jax.random.normal(jax.random.key(1), (8,))
    weights = init_mlp(jax.random.key(0))
    opt = optax.adam(3e-3)
    state = opt.init(weights)

    def loss_fn(weights):
        params = mlp_to_primitives(weights, z)
        color, alpha = db.render(params, atlas, height=H, width=W, backend=backend)
        image = db.composite(color, alpha, 1.0)  # over white
        return db.losses.mse(image, target)

    @jax.jit
    def step(weights, state):
        loss, grads = jax.value_and_grad(loss_fn)(weights)  # gradients flow through render
        updates, state = opt.update(grads, state)
        return optax.apply_updates(weights, updates), state, loss

    first = None
    for i in range(steps):
        weights, state, loss = step(weights, state)
        first = float(loss) if first is None else first
    print(f"MSE {first:.4f} -> {float(loss):.4f} after {steps} steps")
    return float(loss) / first


if __name__ == "__main__":
    main()
