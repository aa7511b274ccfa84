"""The 24 KADID-10k / KADIS-700k distortion kinds, their groups and their level 1..5 parameters.

Parameters follow REFERENCE.md's table (the KADID definitions as ported in ARNIQA), level 1 mildest, with
these documented departures, each made so that every level is a real, strictly stronger distortion:

* ``gaussian_blur`` level 1: sigma 0.4 instead of 0.1. A sigma-0.1 Gaussian has neighbour weights of
  ~1e-22, so the KADID level 1 returns the input byte for byte.
* ``color_saturation2`` level 1: factor 1.5 instead of 1 (a Lab chroma factor of 1 is the identity).
* ``mean_shift``: KADID's (0, 0.08, -0.08, 0.15, -0.15) starts with the identity and ties +-0.08 and
  +-0.15. Ordered by absolute change, here the shifts grow evenly to KADID's largest (0.15) with
  alternating sign, so both directions are present: 0.03, -0.06, 0.09, -0.12, 0.15.
* ``linear_contrast``: KADID's (0, 0.15, -0.4, 0.3, -0.6) reordered by absolute change is
  (0, 0.15, 0.3, -0.4, -0.6); its identity 0 is replaced by 0.075 (half of level 2). The curve is defined
  so that 0 is the identity (see :mod:`.sharpness`), so the absolute value is the severity.
* ``motion_blur``: the parameter is KADID's "radius"; the kernel is a line of ``radius + 1`` pixels
  (MATLAB's ``fspecial('motion', 1)`` is a single pixel, i.e. no blur at level 1).
"""

from __future__ import annotations

#: All kinds, in REFERENCE.md's table order.
KINDS: tuple[str, ...] = (
    "gaussian_blur",
    "lens_blur",
    "motion_blur",
    "color_diffusion",
    "color_shift",
    "color_saturation1",
    "color_saturation2",
    "jpeg2000",
    "jpeg",
    "white_noise",
    "white_noise_cc",
    "impulse_noise",
    "multiplicative_noise",
    "brighten",
    "darken",
    "mean_shift",
    "jitter",
    "non_eccentricity_patch",
    "pixelate",
    "quantization",
    "color_block",
    "high_sharpen",
    "linear_contrast",
    "nonlinear_contrast",
)

#: Number of severity levels; levels are numbered 1 (mildest) .. LEVELS (strongest).
LEVELS = 5

#: Level 1..5 parameter of every kind (units in the comments; see the module docstring for departures).
LEVEL_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.4, 0.5, 1.0, 2.0, 5.0),  # sigma in pixels
    "lens_blur": (1.0, 2.0, 4.0, 6.0, 8.0),  # disk radius in pixels
    "motion_blur": (1.0, 2.0, 4.0, 6.0, 10.0),  # radius; line length radius + 1 px, random angle
    "color_diffusion": (1.0, 3.0, 6.0, 8.0, 12.0),  # amount: ab blurred with sigma 1.5a+2, scaled by a
    "color_shift": (1.0, 3.0, 6.0, 8.0, 12.0),  # green-channel shift in pixels, random direction
    "color_saturation1": (0.4, 0.2, 0.1, 0.0, -0.4),  # HSV saturation factor
    "color_saturation2": (1.5, 2.0, 3.0, 6.0, 9.0),  # Lab chroma (a, b) factor
    "jpeg2000": (16.0, 32.0, 45.0, 120.0, 170.0),  # compression ratio
    "jpeg": (43.0, 36.0, 24.0, 7.0, 4.0),  # JPEG quality
    "white_noise": (0.001, 0.002, 0.003, 0.005, 0.01),  # variance, RGB
    "white_noise_cc": (0.0001, 0.0005, 0.001, 0.002, 0.003),  # variance, YCbCr
    "impulse_noise": (0.001, 0.005, 0.01, 0.02, 0.03),  # salt-and-pepper density per sample
    "multiplicative_noise": (0.001, 0.005, 0.01, 0.02, 0.05),  # speckle variance
    "brighten": (0.1, 0.2, 0.4, 0.7, 1.1),  # tone-curve amount
    "darken": (0.05, 0.1, 0.2, 0.4, 0.8),  # tone-curve amount
    "mean_shift": (0.03, -0.06, 0.09, -0.12, 0.15),  # added to every channel
    "jitter": (0.05, 0.1, 0.2, 0.5, 1.0),  # std of the per-pixel displacement, 5 passes
    "non_eccentricity_patch": (20.0, 40.0, 60.0, 80.0, 100.0),  # number of 16x16 patches moved
    "pixelate": (0.01, 0.05, 0.1, 0.2, 0.5),  # strength s: downscale factor 0.95 - s**0.6
    "quantization": (20.0, 16.0, 13.0, 10.0, 7.0),  # number of levels per channel
    "color_block": (2.0, 4.0, 6.0, 8.0, 10.0),  # number of 32x32 blocks of random colour
    "high_sharpen": (1.0, 2.0, 3.0, 6.0, 12.0),  # unsharp-mask amount on Lab L
    "linear_contrast": (0.075, 0.15, 0.3, -0.4, -0.6),  # tone-curve amount, reordered by |change|
    "nonlinear_contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # output half-range around 0.5
}

#: KADID groups (used by callers that sample one kind per group).
GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("gaussian_blur", "lens_blur", "motion_blur"),
    "color": ("color_diffusion", "color_shift", "color_saturation1", "color_saturation2"),
    "compression": ("jpeg2000", "jpeg"),
    "noise": ("white_noise", "white_noise_cc", "impulse_noise", "multiplicative_noise"),
    "brightness": ("brighten", "darken", "mean_shift"),
    "spatial": ("jitter", "non_eccentricity_patch", "pixelate", "quantization", "color_block"),
    "sharpness_contrast": ("high_sharpen", "linear_contrast", "nonlinear_contrast"),
}

#: Kinds whose output depends on the seed (the others are deterministic functions of the image).
RANDOM_KINDS: frozenset[str] = frozenset(
    {
        "motion_blur",
        "color_shift",
        "white_noise",
        "white_noise_cc",
        "impulse_noise",
        "multiplicative_noise",
        "jitter",
        "non_eccentricity_patch",
        "color_block",
    }
)
