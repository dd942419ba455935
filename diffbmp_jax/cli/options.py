"""The options shared by the fitting subcommands (``fit``, ``demo``, ``batch``,
``text``, ``video``, ``regions``), and the helpers every subcommand uses.

Each shared option is defined once, in :data:`SHARED`, with one meaning and
one check (:func:`check_options`); a subcommand picks the ones it takes
(:func:`add_shared`) and gives their defaults in its own ``DEFAULTS`` table.
Every option is parsed with the argparse default ``None`` ("not given"), so
that the three sources merge in one place (:func:`resolve`)::

    subcommand DEFAULTS  <  --config FILE.toml  <  the command line

A config file holds top-level keys named like the long options (``steps``,
``num_primitives`` or ``n``, ``out`` or ``o``, ``stamps``, ``export``, ...) and
any :class:`~diffbmp_jax.fitting.config.FitConfig` field, at top level or in a
``[fit]`` table. Bad values give a ``ValueError`` naming the option; ``main``
prints it as one line and exits with status 2.

Building a parser from this module imports neither JAX nor the fitters: the
choices below mirror the library's constants (the tests check they agree).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from diffbmp_jax.cli.logs import add_verbosity

__all__ = [
    "PROG", "COMMON_DEFAULTS", "HelpFormatter", "version", "subparser", "SHARED", "SHOWN", "ALIASES",
    "FIT_OPTIONS", "add_shared", "add_option", "flag", "read_toml", "split_config", "resolve", "fit_fields",
    "check_options", "check_out", "check_exports", "check_font", "extra_formats", "write_exports",
    "config_dict", "json_safe", "BACKEND_CHOICES", "MASK_RULE_CHOICES", "TEMPLATE_CHOICES", "EXPORT_FORMATS",
]

PROG = "diffbmp-jax"

# Mirrors of library constants (rendering.api.BACKENDS, stamps.MASK_RULES,
# fitting.config.TEMPLATE_CHOICES, export.FORMATS): importing those would import JAX.
BACKEND_CHOICES = ("auto", "reference", "cpu", "cuda")
MASK_RULE_CHOICES = ("auto", "alpha", "luminance", "background", "opaque")
TEMPLATE_CHOICES = ("init", "round_robin", "random", "color")
EXPORT_FORMATS = ("png", "psd", "svg", "gif", "mp4")

# Options that set the FitConfig field of the same name.
FIT_OPTIONS = ("backend", "color_blend", "init", "templates", "reassign_every")

# Config-file spellings of option names.
ALIASES = {"n": "num_primitives", "o": "out", "output": "out"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (``(default: 500)``), keeps descriptions as written.

    The default shown is the subcommand's real one (``action.shown_default``,
    set by :func:`add_option`), not argparse's ``None`` placeholder; flags and
    options without a default show none.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "(default" in text:
            return text
        shown = getattr(action, "shown_default", action.default)
        if shown is None or shown is argparse.SUPPRESS or isinstance(shown, bool) or action.nargs == 0:
            return text
        if isinstance(shown, (list, tuple)):
            shown = " ".join(map(str, shown))
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def version() -> str:
    """The package version, read without importing the package (which imports JAX).

    ``__version__`` from ``diffbmp_jax/__init__.py`` (the code being run), else
    the installed distribution's metadata.
    """
    try:
        text = (Path(__file__).resolve().parent.parent / "__init__.py").read_text(encoding="utf-8")
        m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        from importlib.metadata import version as dist_version
        return dist_version("diffbmp-jax")
    except Exception:  # not installed
        return "unknown"


def subparser(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """``subparsers.add_parser(name, ...)`` with :class:`HelpFormatter`."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    parser = subparsers.add_parser(name, **kwargs)
    add_verbosity(parser)
    return parser


# The shared options: name (= argparse dest = config key) -> (flags, add_argument keywords).
SHARED: dict[str, tuple[tuple[str, ...], dict]] = {
    "stamps": (("--stamps",), dict(nargs="+", metavar="SPEC",
                                   help="stamp images, folders, globs, text:HELLO, text:word:HI THERE, emoji:🌸🌼 "
                                        "(see stamps.load_stamps)")),
    "num_primitives": (("-n", "--num-primitives"), dict(type=int, metavar="N", help="number of primitives")),
    "steps": (("--steps",), dict(type=int, help="optimisation steps")),
    "out": (("-o", "--out"), dict(metavar="DIR", help="output folder (checked before fitting)")),
    "config": (("--config",), dict(metavar="FILE.toml",
                                   help="TOML file: keys named like the long options, and FitConfig fields "
                                        "(top level or in a [fit] table); the command line wins")),
    "size": (("--size",), dict(type=int, metavar="PX", help="longer side of the working canvas, in pixels")),
    "stamp_size": (("--stamp-size",), dict(type=int, metavar="PX", help="side of each atlas bitmap, in pixels")),
    "color_blend": (("--color-blend",), dict(type=float, metavar="B",
                                             help="0: stamps take optimised colours, 1: each stamp keeps its own")),
    "export": (("--export",), dict(metavar="FMT[,FMT]",
                                   help="comma list of result formats, of " + ", ".join(EXPORT_FORMATS))),
    "export_scale": (("--export-scale",), dict(type=float, metavar="S",
                                               help="size of the exported results, times the canvas: re-rendered, "
                                                    "not resampled (SVG: its displayed size)")),
    "font": (("--font",), dict(help="font for text: stamps (a .ttf/.otf path or an installed font's file name; "
                                    "default: Pillow's bundled font)")),
    "emoji_font": (("--emoji-font",), dict(metavar="FONT", help="colour emoji font for emoji: stamps (default: "
                                                               "the system's, or $DIFFBMP_EMOJI_FONT)")),
    "mask_rule": (("--mask-rule",), dict(choices=MASK_RULE_CHOICES,
                                         help="how raster stamps give coverage (see stamps.load_images)")),
    "seed": (("--seed",), dict(type=int, help="random seed")),
    "backend": (("--backend",), dict(choices=BACKEND_CHOICES, help="renderer")),
    "progress": (("--no-progress",), dict(action="store_false", help="hide the progress bar")),
    "cache": (("--no-cache",), dict(action="store_false", help="do not keep compiled programs between runs "
                                                               "(the cache: $XDG_CACHE_HOME/diffbmp-jax)")),
}

# Defaults shared by every subcommand unless its table says otherwise.
COMMON_DEFAULTS = {"config": None, "size": None, "export": "png", "export_scale": 1.0, "progress": True,
                   "cache": True,
                   "font": None, "emoji_font": None, "seed": 0, "backend": "auto", "color_blend": None, "mask_rule": "auto"}


# How --help shows defaults that are not a plain value of the DEFAULTS tables.
SHOWN = {"color_blend": 0}

MAX_STAMP_SIZE = 4096  # diffbmp_jax.stamps.raster.MAX_STAMP_SIZE, known here without importing the library


def flag(name: str) -> str:
    """How error messages name option ``name``: ``--steps``, ``--num-primitives (num_primitives)``, ``-o/--out``."""
    if name == "out":
        return "-o/--out"
    if name == "progress":
        return "--no-progress (progress)"
    if name == "cache":
        return "--no-cache (cache)"
    long = "--" + name.replace("_", "-")
    return long if "_" not in name else f"{long} ({name})"


def add_option(parser, defaults: dict, name: str, *flags, shown=None, **kwargs):
    """Adds option ``name`` whose default is ``defaults[name]`` (argparse's default stays ``None``).

    ``shown``: the default as ``--help`` prints it, when not ``defaults[name]``.
    """
    if name not in defaults:
        raise KeyError(f"option {name!r} has no entry in the subcommand's DEFAULTS")
    positional = not flags[0].startswith("-")
    if not positional:
        kwargs["dest"] = name
    kwargs.setdefault("default", None)
    action = parser.add_argument(*flags, **kwargs)
    action.shown_default = defaults[name] if shown is None else shown
    return action


def add_shared(parser, defaults: dict, names=None, *, help: dict | None = None, shown: dict | None = None) -> None:
    """Adds the shared options ``names`` (default: every one in ``defaults``) to ``parser``.

    ``help`` / ``shown``: per-option help text / shown default for this subcommand.
    """
    for name in (names if names is not None else [n for n in SHARED if n in defaults]):
        flags, kwargs = SHARED[name]
        kwargs = dict(kwargs)
        if help and name in help:
            kwargs["help"] = help[name]
        add_option(parser, defaults, name, *flags, shown=(shown or {}).get(name, SHOWN.get(name)), **kwargs)


# --------------------------------------------------------------------- config

def read_toml(path) -> dict:
    """The parsed TOML file; FileNotFoundError / ValueError naming ``config``."""
    import tomllib
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"config: no such file: {str(path)!r}")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config: cannot parse {str(path)!r} as TOML: {e}") from e
    except OSError as e:
        raise ValueError(f"config: cannot read {str(path)!r}: {e}") from e


def split_config(raw: dict, source: str, options) -> tuple[dict, dict]:
    """Splits a parsed config into ``(options, FitConfig fields)``.

    ``options``: the names this subcommand takes. A top-level key is an option
    when it names one (``-`` or ``_``, or an alias such as ``n``), else a
    FitConfig field; ``[fit]`` holds FitConfig fields only. Unknown keys raise
    ValueError listing the valid ones.
    """
    from diffbmp_jax.fitting.config import FitConfig
    fit_names = set(FitConfig.fields())
    options = set(options) - {"config"}
    raw = dict(raw)
    table = raw.pop("fit", {})
    if not isinstance(table, dict):
        raise ValueError(f"config: [fit] in {source} must be a table")
    unknown = sorted(k for k in table if k not in fit_names)
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown} in [fit] of {source}; valid keys: {sorted(fit_names)}")
    cli, fit = {}, dict(table)
    for k, v in raw.items():
        name = k.replace("-", "_")
        name = ALIASES.get(name, name)
        if name in options:
            cli[name] = v
        elif name in fit_names:
            fit[name] = v
        else:
            raise ValueError(f"config: unknown key {k!r} in {source}; valid keys: {sorted(options | fit_names)}")
    return cli, fit


def resolve(args, defaults: dict) -> tuple[dict, dict, set]:
    """Merges ``defaults`` < ``--config`` < command line.

    Returns ``(options, fit, given)``: every option's value (and the positional
    arguments), the FitConfig fields read from the config, and the names given
    in the config or on the command line.
    """
    opts = dict(defaults)
    fit: dict = {}
    given: set = set()
    config = getattr(args, "config", None)
    if config is not None:
        cli, fit = split_config(read_toml(config), str(config), defaults)
        opts.update(cli)
        given |= set(cli)
    for k, v in vars(args).items():
        if k in ("command", "config") or v is None:
            continue
        opts[k] = v
        given.add(k)
    opts["config"] = config
    return opts, fit, given


def fit_fields(opts: dict, fit: dict, given: set, base: dict | None = None) -> dict:
    """FitConfig fields: ``base`` < the config's fields < options named like fields.

    An option of :data:`FIT_OPTIONS` counts when given (config or command line),
    or when its default is not ``None`` and the config set no such field.
    """
    out = dict(base or {})
    out.update(fit)
    for name in FIT_OPTIONS:
        if name not in opts:
            continue
        v = opts[name]
        if v is not None and (name in given or name not in fit):
            out[name] = float(v) if name == "color_blend" else v
    return out


def config_dict(config) -> dict:
    """A FitConfig's fields as a dict (for ``history.json``)."""
    return {k: getattr(config, k) for k in config.fields()}


# ----------------------------------------------------------------- validation

def _int(name, v, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        kind = "a positive int" if low == 1 else "a non-negative int"
        raise ValueError(f"{flag(name)} must be {kind}, got {v!r}")
    return v


def _number(name, v, low: float | None, high: float | None, *, open_low: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if open_low else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        if low is not None and high is not None:
            want = f"a number in [{low}, {high}]"
        elif low is not None:
            want = f"a number {'>' if open_low else '>='} {low}"
        else:
            want = "a finite number"
        raise ValueError(f"{flag(name)} must be {want}, got {v!r}")
    return float(v)


def _choice(name, v, choices) -> str:
    if v not in choices:
        raise ValueError(f"{flag(name)} must be one of {list(choices)}, got {v!r}")
    return v


def check_out(out) -> Path:
    """The output folder as a Path, checked before any fitting.

    ValueError naming ``-o/--out`` when it is a file, lies under a file, or
    cannot be written (it or the nearest existing folder above it).
    """
    if out is None or not str(out):
        raise ValueError("-o/--out: no output folder given")
    if not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"-o/--out must be a folder path, got {out!r}")
    p = Path(out)
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"-o/--out: {str(p)!r} exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"-o/--out: cannot write into {str(p)!r} (permission denied)")
        return p
    above = p.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ValueError(f"-o/--out: cannot create {str(p)!r}: {str(above)!r} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ValueError(f"-o/--out: cannot create {str(p)!r}: folder {str(above)!r} is not writable")
    return p


def check_exports(exports) -> list[str]:
    """The ``--export`` formats (comma string or sequence): lower-cased, deduplicated, each known.

    ``png`` is always available; the others need :mod:`diffbmp_jax.export`.
    Raises ValueError naming ``--export``.
    """
    if isinstance(exports, str):
        exports = [e.strip().lower() for e in exports.split(",") if e.strip()]
    elif not isinstance(exports, (list, tuple)) or not all(isinstance(e, str) for e in exports):
        raise ValueError(f"--export must be a comma list of formats, got {exports!r}")
    formats = list(dict.fromkeys(str(e).strip().lower().lstrip(".") for e in exports))
    if not formats:
        raise ValueError("--export: no format given")
    extra = [e for e in formats if e != "png"]
    if extra:
        try:
            from diffbmp_jax import export as exporters
        except ImportError as e:
            raise ValueError(f"--export: format(s) {extra} need diffbmp_jax.export, which failed to import: {e}") from e
        fn = getattr(exporters, "export", None)
        if fn is None:
            raise ValueError(f"--export: format(s) {extra} are not available: diffbmp_jax.export.export() "
                             "does not exist in this installation (only 'png' is)")
        known = getattr(exporters, "FORMATS", None)
        bad = [e for e in extra if known is not None and e not in known]
        if bad:
            raise ValueError(f"--export: unknown format(s) {bad}; available: {list(dict.fromkeys(['png', *known]))}")
    return formats


def check_font(font, name: str = "--font") -> str | None:
    """``--font`` (or ``name``) resolved to a font file (None: the default font); ValueError naming it."""
    if font is None:
        return None
    if not isinstance(font, (str, os.PathLike)) or not str(font):
        raise ValueError(f"{name} must be a font file path or name, got {font!r}")
    from diffbmp_jax.stamps import find_font
    return find_font(font)


def check_options(opts: dict, optional_size: bool = False) -> Path:
    """Checks every shared option in ``opts`` (in place: normalised values) and returns the output folder.

    ``optional_size``: ``size=None`` means "keep the input's size" here.
    Raises ValueError (or FileNotFoundError for ``--config``) naming the option.
    """
    if "stamps" in opts:
        s = opts["stamps"]
        if isinstance(s, (str, os.PathLike)):
            s = [s]
        if not s:
            raise ValueError("--stamps: no stamps given (--stamps FILE/FOLDER/GLOB/text:.../emoji:... "
                             "or 'stamps' in the config)")
        if not isinstance(s, (list, tuple)) or not all(isinstance(x, (str, os.PathLike)) for x in s):
            raise ValueError(f"--stamps must be a list of stamp specifications, got {s!r}")
        opts["stamps"] = [str(x) for x in s]
    if "num_primitives" in opts:
        _int("num_primitives", opts["num_primitives"], 1)
    if "steps" in opts:
        _int("steps", opts["steps"], 0)
    if "size" in opts and not (optional_size and opts["size"] is None):
        _int("size", opts["size"], 1)
    if "stamp_size" in opts:
        _int("stamp_size", opts["stamp_size"], 1)
        if opts["stamp_size"] > MAX_STAMP_SIZE:
            raise ValueError(f"{flag('stamp_size')}: stamps are at most {MAX_STAMP_SIZE} px a side, "
                             f"got {opts['stamp_size']}")
    if "seed" in opts:
        v = opts["seed"]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"--seed must be an int, got {v!r}")
        if not -2**63 <= v < 2**63:
            raise ValueError(f"--seed must fit in 64 bits (-2**63 <= seed < 2**63), got {v}")
    if "export_scale" in opts:
        opts["export_scale"] = _number("export_scale", opts["export_scale"], 0.0, None, open_low=True)
    if "color_blend" in opts and opts["color_blend"] is not None:
        opts["color_blend"] = _number("color_blend", opts["color_blend"], 0.0, 1.0)
    if "backend" in opts:
        _choice("backend", opts["backend"], BACKEND_CHOICES)
    if "mask_rule" in opts:
        _choice("mask_rule", opts["mask_rule"], MASK_RULE_CHOICES)
    for name in ("progress", "cache"):
        if name in opts and not isinstance(opts[name], bool):
            raise ValueError(f"{flag(name)} must be true or false, got {opts[name]!r}")
    if "export" in opts:
        opts["export"] = check_exports(opts["export"])
    for name in ("font", "emoji_font"):
        if name in opts:
            check_font(opts[name], flag(name))
            if opts[name] is not None:
                opts[name] = str(opts[name])
    out = check_out(opts.get("out"))
    opts["out"] = str(opts["out"])
    return out


# -------------------------------------------------------------------- outputs

def extra_formats(formats, scale: float) -> list[str]:
    """The ``--export`` formats still to write once ``result.png`` is: all but png,
    and png too when ``scale`` asks for a re-rendered size."""
    return [f for f in formats if f != "png" or scale != 1]


def write_exports(path_of, formats, params, atlas, template, height: int, width: int, config, *,
                  scale: float = 1.0, name: str = "result", **kwargs) -> None:
    """Writes ``name.<fmt>`` for every format in ``formats``, at ``path_of(file name)``.

    Rendered by :func:`diffbmp_jax.export.export` at ``scale`` over
    ``config.output_background`` with ``config.color_blend`` and ``config.antialias``;
    ``kwargs`` go to the exporter (e.g. ``fps`` for animations).
    """
    if not formats:
        return
    from diffbmp_jax import export as exporters
    bg = config.output_background
    bg = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}.get(bg, bg)
    for fmt in formats:
        exporters.export(fmt, path_of(f"{name}.{fmt}"), params, atlas, height=height, width=width,
                         template=template, color_blend=config.color_blend, background=bg,
                         antialias=config.antialias, scale=scale, **kwargs)


def json_safe(history: dict) -> dict:
    """NaN (the loss at step 0, before any step) becomes null: strict JSON has no NaN."""
    return {k: [None if isinstance(v, float) and v != v else v for v in vals] for k, vals in history.items()}
