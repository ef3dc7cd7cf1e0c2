"""Fitting BNSL and the baselines to one curve: search, least-squares refinement, break-count choice.

BNSL procedure (one curve, n breaks), all in log space on z = log x - mean(log x):
1. Data-adaptive grid: a in {0} and min(y) * (1 - q) for q log-spaced; break positions log d
   across and beyond the observed x (from 0.25 span below to 0.5 span above); sharpness f
   log-spaced relative to the span. For each a and each set of n (d, f) the model is linear in
   (log b, c0, c_1..c_n) on log(y - a): solved from one Gram matrix per a (variable projection),
   so ~10^5 candidates cost a few milliseconds (`bnsl.vp_search_nb`).
2. The best candidates of that approximate loss get the exact log-space loss (`bnsl.loss_many_nb`,
   parallel over parameter vectors); the best K are refined with a box-constrained
   Levenberg-Marquardt loop (`bnsl.lm_nb`, on our analytic Jacobian `bnsl.resid_jac_nb`: for the
   many starts of a fit, scipy's per-iteration Python overhead was most of the fit time); the
   lowest loss wins, and the chosen fit of each curve gets a last scipy.optimize.least_squares
   (trust-region reflective, same bounds and Jacobian) polish, kept if it lowers the loss. Bounds keep the refinement inside what the grid covers: |slopes| <= 20, f no
   sharper than the grid's sharpest, break positions within one span of the data (the final fit:
   no later than 0.1 span before the last x), 0 <= a <= max(y).
3. breaks="auto": the last `val_frac` (0.3) of the fit points are held out, n = 0..3 fit on the rest,
   the n with the lowest validation RMSLE is refit on all fit points (the BNSL paper's appendix
   rule), except that fewer breaks are kept unless more cut the validation RMSLE by `val_margin`
   (20 %; ties within 1e-4 also go to fewer breaks). With n = 0 the form is M2 (a + b x^-c0).

backend="numpy" runs the same procedure with the NumPy twins of the kernels (benchmark baseline).
"""
from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.optimize import least_squares

from fitting import bnsl, forms

ALL_FORMS = ("bnsl",) + forms.FORMS


@dataclass
class SearchConfig:
    """Grid sizes and refinement settings of the BNSL search (defaults used by the benchmark)."""
    n_a: int = 12  # values of a: 0 and 11 fractions of min(y)
    n_d: tuple = (0, 32, 20, 12)  # break positions per n = 0..3
    n_f: tuple = (0, 6, 5, 4)  # sharpness values per n
    top_m: int = 256  # candidates scored with the exact loss
    top_k: int = 2  # candidates refined by least_squares
    max_nfev: int = 100  # Levenberg-Marquardt evaluations per start (final fit)
    val_max_nfev: int = 100  # the same for the fits that choose the number of breaks (0: search only)
    val_frac: float = 0.3  # breaks="auto": last fraction of fit points used as validation
    val_margin: float = 0.2  # breaks="auto": more breaks must cut validation RMSLE by this fraction
    # The final fit's breaks lie at least 0.1 span of log x before the last x: a break at or past the end
    # fits the last points' noise, and its slope change then rules the extrapolation (a review's 2 %-noise
    # power law got one at its last x, turning upward: 35,000x the error at 4x the x). The fits that choose
    # the number of breaks keep breaks up to one span past their last x (the validation points lie there).
    final_beyond: float = -0.1


@dataclass
class FitResult:
    """Result of one form fit to one curve.

    params: named natural parameters (see bnsl.param_names / forms.PARAM_NAMES).
    loss: mean squared log error on the fit points; rmsle_fit / rmsle_heldout: root mean squared
    log error on fit / held-out points (NaN when none). evaluations: loss evaluations (grid
    candidates + exact-loss scores + least_squares function calls). val_rmsle: per break count,
    the validation RMSLE used to choose it (breaks="auto").
    """
    form: str
    n_breaks: int | None = None
    params: dict = field(default_factory=dict)
    loss: float = math.nan
    rmsle_fit: float = math.nan
    rmsle_heldout: float = math.nan
    n_fit: int = 0
    n_heldout: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    status: str = "ok"
    reason: str = ""
    val_rmsle: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def predict(self, x) -> np.ndarray:
        """y predicted at x (array-like, > 0)."""
        if not self.ok:
            raise ValueError(f"{self.form} fit failed: {self.reason}")
        return predict(self.form, self.params, x)

    def report(self) -> str:
        """Readable multi-line summary."""
        head = f"[{self.form}" + (f", {self.n_breaks} breaks]" if self.n_breaks is not None else "]")
        if not self.ok:
            return f"{head} {self.status}: {self.reason}"
        lines = [f"{head} {self.n_fit} fit points, {self.n_heldout} held out, "
                 f"{self.evaluations} evaluations, {self.seconds:.3f} s"]
        lines += [f"  {k:>6} = {v: .6g}" for k, v in self.params.items()]
        lines.append(f"  rmsle_fit = {self.rmsle_fit:.5f}   rmsle_heldout = {self.rmsle_heldout:.5f}")
        if self.val_rmsle:
            lines.append("  validation RMSLE by breaks: "
                         + ", ".join(f"{n}: {v:.5f}" for n, v in self.val_rmsle.items()))
        if self.reason:  # what weakens the extrapolation (_remarks)
            lines.append(f"  note: {self.reason}")
        return "\n".join(lines)


def predict(form: str, params: dict, x) -> np.ndarray:
    """y of `form` with named params at x."""
    if form == "bnsl":  # through log_b: b itself may be out of float64's range (bnsl.to_natural)
        logy = bnsl.log_bnsl_np(bnsl.from_natural(params), np.log(np.asarray(x, dtype=np.float64)))
        return np.exp(np.clip(logy, -745.0, 709.0))
    return forms.predict(form, params, x)


def rmsle(yhat, y) -> float:
    """sqrt(mean((log yhat - log y)^2)); NaN for no points."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((np.log(np.asarray(yhat, dtype=np.float64)) - np.log(y)) ** 2)))


class FitError(ValueError):
    """Input a form cannot be fit to (message names the problem)."""


def check_xy(x, y, n_params: int, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate and sort a curve; raise FitError with a one-line reason."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise FitError(f"x and y must be 1-D of the same length{what}")
    if not np.all(np.isfinite(x)):
        raise FitError(f"x has {int(np.sum(~np.isfinite(x)))} NaN/inf values{what}")
    if not np.all(np.isfinite(y)):
        raise FitError(f"y has {int(np.sum(~np.isfinite(y)))} NaN/inf values{what}")
    if np.any(x <= 0):
        raise FitError(f"x has {int(np.sum(x <= 0))} values <= 0 (log x is taken){what}")
    if np.any(y <= 0):
        raise FitError(f"y has {int(np.sum(y <= 0))} values <= 0 (log y is taken){what}")
    if len(np.unique(x)) < 2:
        raise FitError(f"a single x value{what}")
    if len(x) < n_params:
        raise FitError(f"{len(x)} points < {n_params} parameters{what}")
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


# ---------------------------------------------------------------- BNSL


@lru_cache(maxsize=None)
def _combos(n: int, D: int, F: int) -> np.ndarray:
    """Every choice of n distinct break positions (increasing) and n sharpness values: basis column
    indices (position * F + sharpness), rows in lexicographic order, so that runs of rows share all
    columns but the last and the last goes up by one (what `bnsl.vp_search_nb` factors once per run)."""
    if n == 0:
        return np.zeros((1, 0), dtype=np.int64)
    rows = sorted([j * F + m for j, m in zip(js, ms)]
                  for js in itertools.combinations(range(D), n)
                  for ms in itertools.product(range(F), repeat=n))
    return np.array(rows, dtype=np.int64)


@lru_cache(maxsize=None)
def _geomspace(start: float, stop: float, num: int) -> np.ndarray:
    """np.geomspace, computed once per grid (it costs ~0.2 ms a call, several per fit); read-only."""
    out = np.geomspace(start, stop, num)
    out.flags.writeable = False
    return out


def _kernels(backend: str):
    if backend == "numba":
        return bnsl.break_basis_nb, bnsl.vp_search_nb, bnsl.vp_thetas_nb, bnsl.loss_many_nb, bnsl.lm_nb
    if backend == "numpy":
        return bnsl.break_basis, bnsl.vp_search_np, bnsl.vp_thetas_np, bnsl.loss_many_np, bnsl.lm_np
    raise ValueError(f"backend must be 'numba' or 'numpy', not {backend!r}")


def _inside(theta, lo, hi):
    """Clip theta strictly inside finite bounds (least_squares needs a strictly feasible start). The margin,
    1e-9 of the bound's size, is at most 1e-6 of the box's width: a box narrower than the margin (a in
    [0, max y] of a curve near 1e-12) would otherwise be crossed, and the start land outside it."""
    with np.errstate(invalid="ignore"):
        width = hi - lo  # inf where a side is open
        lo_in = np.where(np.isfinite(lo), lo + np.minimum(1e-9 * (np.abs(lo) + 1), 1e-6 * width), lo)
        hi_in = np.where(np.isfinite(hi), hi - np.minimum(1e-9 * (np.abs(hi) + 1), 1e-6 * width), hi)
    return np.clip(theta, lo_in, hi_in)


def _refine(lm, theta0, lo, hi, z, logy, max_nfev):
    """Box-constrained Levenberg-Marquardt from theta0 with our Jacobian; returns (theta, loss, nfev)."""
    theta, loss, nfev = lm(np.ascontiguousarray(theta0, dtype=np.float64), lo, hi, z, logy, max_nfev)
    return theta, (float(loss) if math.isfinite(loss) else math.inf), int(nfev)


def _polish(theta, loss, lo, hi, z, logy, backend: str, max_nfev: int = 50):
    """The final refinement: scipy.optimize.least_squares (trust-region reflective, bounds, our
    Jacobian) from the LM optimum, one call per curve; kept only if it lowers the loss."""
    rj = bnsl.resid_jac_nb if backend == "numba" else bnsl.resid_jac_np
    try:
        with np.errstate(all="ignore"):
            sol = least_squares(lambda t: rj(t, z, logy)[0], _inside(theta, lo, hi),
                                jac=lambda t: rj(t, z, logy)[1], bounds=(lo, hi), method="trf",
                                x_scale="jac", max_nfev=max_nfev)
    except ValueError:  # a non-finite residual at the start: keep the LM result
        return theta, loss, 0
    new = float(np.mean(sol.fun ** 2))
    return (sol.x, new, int(sol.nfev)) if math.isfinite(new) and new < loss else (theta, loss, int(sol.nfev))


def search_grids(zc: np.ndarray, y: np.ndarray, n: int, cfg: SearchConfig, break_basis=bnsl.break_basis,
                 beyond: float = 1.0):
    """The data-adaptive grid of the BNSL search (module docstring, step 1) for n breaks.

    Args:
        zc: log x, centred; y: the curve (positive).
        break_basis: `bnsl.break_basis` or its Numba twin.
        beyond: how far past the last x breaks may lie, in spans of log x (the grid goes half as far);
            negative: how far before it they must lie (the grid ends there).

    Returns:
        (a_grid, ld_grid, f_grid, basis, combos): values of a, break positions (log d), sharpness
        values, the design columns (N, 2 + D*F) and the candidate column sets (`_combos`).
    """
    zmin, zmax = float(zc.min()), float(zc.max())
    span = max(zmax - zmin, 1e-3)
    a_grid = np.concatenate([[0.0], float(y.min()) * (1 - _geomspace(0.9, 0.002, cfg.n_a - 1))])
    D, F = (cfg.n_d[n], cfg.n_f[n]) if n > 0 else (1, 1)
    ld_grid = np.linspace(zmin - 0.25 * span, zmax + (0.5 if beyond > 0 else 1.0) * beyond * span, D)
    f_grid = span * _geomspace(0.01, 1.0, F)
    basis = np.ascontiguousarray(break_basis(zc, ld_grid, f_grid) if n > 0 else np.stack([np.ones_like(zc), -zc], 1))
    return a_grid, ld_grid, f_grid, basis, _combos(n, D, F)


def fit_bnsl_n(x, y, n: int, z0: float | None = None, cfg: SearchConfig | None = None,
               backend: str = "numba", max_nfev: int | None = None, polish: bool = False, beyond: float = 1.0):
    """Fit BNSL with exactly n breaks to sorted positive (x, y); breaks up to `beyond` spans of log x past
    the last x.

    Returns:
        (theta, z0, loss, evaluations): internal theta on z - z0 (see bnsl.to_natural).
    """
    cfg = cfg or SearchConfig()
    break_basis, vp_search, vp_thetas, loss_many, lm = _kernels(backend)
    z = np.log(x)
    z0 = float(np.mean(z)) if z0 is None else z0
    zc = z - z0
    logy = np.log(y)
    zmin, zmax = float(zc.min()), float(zc.max())
    span = max(zmax - zmin, 1e-3)
    a_grid, ld_grid, f_grid, basis, combos = search_grids(zc, y, n, cfg, break_basis, beyond)

    approx = vp_search(y, a_grid, basis, combos)  # (A, C)
    evaluations = approx.size
    flat = approx.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    if finite.size == 0:
        raise FitError(f"no finite start for {n} breaks")
    m = min(cfg.top_m, finite.size)
    sel = finite[np.argpartition(flat[finite], m - 1)[:m]] if m < finite.size else finite
    thetas = vp_thetas(y, a_grid, basis, combos, sel.astype(np.int64), ld_grid, f_grid)
    exact = loss_many(thetas, zc, logy)
    evaluations += len(thetas)

    lo = [0.0, -np.inf, -bnsl.C_MAX] + [-bnsl.C_MAX, zmin - span, float(f_grid[0])] * n
    hi = [max(float(y.max()), 1e-300), np.inf, bnsl.C_MAX] + [bnsl.C_MAX, zmax + beyond * span, 2.0 * span] * n
    lo, hi = np.array(lo), np.array(hi)
    best_theta, best_loss = thetas[int(np.argmin(exact))], float(np.min(exact))
    max_nfev = cfg.max_nfev if max_nfev is None else max_nfev
    for r in np.argsort(exact)[: cfg.top_k if max_nfev > 0 else 0]:
        if not np.isfinite(exact[r]):
            break
        theta, loss, nfev = _refine(lm, thetas[r], lo, hi, zc, logy, max_nfev)
        evaluations += nfev
        if loss < best_loss:
            best_theta, best_loss = theta, loss
    if polish and math.isfinite(best_loss):
        best_theta, best_loss, nfev = _polish(best_theta, best_loss, lo, hi, zc, logy, backend)
        evaluations += nfev
    return best_theta, z0, best_loss, evaluations


def fit_bnsl(x, y, x_heldout=None, y_heldout=None, breaks="auto", cfg: SearchConfig | None = None,
             backend: str = "numba") -> FitResult:
    """Fit BNSL to one curve; breaks 'auto' (validation rule) or a fixed 0..3.

    Args:
        x, y: fit points (positive, finite; at least 2 distinct x and 3+3n points).
        x_heldout, y_heldout: optional points scored for extrapolation (rmsle_heldout).
        breaks: "auto" or an int 0..3.
        cfg: search settings; backend: "numba" (default) or "numpy" (same procedure, no Numba).

    Returns:
        FitResult (status "error" with a reason instead of raising on bad input).
    """
    cfg = cfg or SearchConfig()
    t0 = time.perf_counter()
    res = FitResult(form="bnsl")
    try:
        if breaks == "auto":
            x, y = check_xy(x, y, bnsl.n_params(0))
            N = len(x)
            n_val = max(1, int(round(cfg.val_frac * N)))
            xt, yt, xv, yv = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
            evals = 0
            for n in range(4):
                if N - n_val < bnsl.n_params(n) or len(np.unique(xt)) < 2:
                    break
                theta, z0, _, e = fit_bnsl_n(xt, yt, n, cfg=cfg, backend=backend, max_nfev=cfg.val_max_nfev)
                evals += e
                pred = bnsl.log_bnsl_np(theta, np.log(xv) - z0)
                res.val_rmsle[n] = float(np.sqrt(np.mean((pred - np.log(yv)) ** 2)))
            if res.val_rmsle:
                # Fewest breaks whose validation RMSLE is within the margin of the best: with 3-18 validation
                # points the differences are noisy, and each break adds 3 parameters to extrapolate with.
                best = min(res.val_rmsle.values())
                n_star = min(n for n, v in res.val_rmsle.items() if v * (1.0 - cfg.val_margin) <= best + 1e-4)
            else:
                n_star = 0
            while bnsl.n_params(n_star) > N:
                n_star -= 1
        else:
            n_star = int(breaks)
            if not 0 <= n_star <= 3:
                raise FitError(f"breaks must be auto or 0..3, not {breaks!r}")
            x, y = check_xy(x, y, bnsl.n_params(n_star), f" for {n_star} breaks")
            evals = 0
        theta, z0, loss, e = fit_bnsl_n(x, y, n_star, cfg=cfg, backend=backend, polish=True,
                                        beyond=cfg.final_beyond)
        res.n_breaks = n_star
        res.params = bnsl.to_natural(theta, z0)
        res.loss = loss
        res.evaluations = evals + e
        _score(res, x, y, x_heldout, y_heldout)
    except FitError as e:
        res.status, res.reason = "error", str(e)
    res.seconds = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------- baselines


def fit_form(form: str, x, y, x_heldout=None, y_heldout=None, cfg: SearchConfig | None = None) -> FitResult:
    """Fit one of m1..m4: grid starts (forms.starts), exact log-space loss, least_squares on the best."""
    cfg = cfg or SearchConfig()
    t0 = time.perf_counter()
    res = FitResult(form=form)
    try:
        npar = len(forms.PARAM_NAMES[form])
        x, y = check_xy(x, y, npar)
        z = np.log(x)
        z0 = float(np.mean(z))
        zc, logy = z - z0, np.log(y)
        starts = forms.starts(form, zc, y, z0)
        lo, hi = (np.array(b, dtype=np.float64) for b in forms.bounds(form, zc, y))

        def loss_of(t):
            with np.errstate(all="ignore"):
                v = float(np.mean((forms.log_pred(form, t, zc, z0) - logy) ** 2))
            return v if math.isfinite(v) else math.inf

        losses = [loss_of(np.clip(s, lo, hi)) for s in starts]
        evals = len(starts)
        best_loss, best_theta = math.inf, None
        for r in np.argsort(losses)[: cfg.top_k]:
            if not math.isfinite(losses[r]):
                break
            if losses[r] < best_loss:  # the start whose loss it is
                best_loss, best_theta = losses[r], np.clip(starts[r], lo, hi)
            t_start = _inside(starts[r], lo, hi)
            if form == "m4":
                fun = lambda t: forms.m4_resid_jac(t, zc, logy)[0]  # noqa: E731
                jac = lambda t: forms.m4_resid_jac(t, zc, logy)[1]  # noqa: E731
            else:
                fun, jac = (lambda t: forms.log_pred(form, t, zc, z0) - logy), "2-point"
            try:
                with np.errstate(all="ignore"):
                    sol = least_squares(fun, t_start, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                        max_nfev=2 * cfg.max_nfev, xtol=1e-10, ftol=1e-10)
            except ValueError:
                continue
            evals += int(sol.nfev)
            v = loss_of(sol.x)
            if v < best_loss:
                best_loss, best_theta = v, sol.x
        if best_theta is None:
            raise FitError("no finite start")
        res.params = forms.to_natural(form, best_theta, z0)
        res.loss, res.evaluations = best_loss, evals
        _score(res, x, y, x_heldout, y_heldout)
    except FitError as e:
        res.status, res.reason = "error", str(e)
    res.seconds = time.perf_counter() - t0
    return res


def _score(res: FitResult, x, y, x_heldout, y_heldout):
    res.n_fit = len(x)
    with np.errstate(all="ignore"):
        res.rmsle_fit = rmsle(predict(res.form, res.params, x), y)
        if x_heldout is not None and len(x_heldout):
            res.n_heldout = len(x_heldout)
            res.rmsle_heldout = rmsle(predict(res.form, res.params, x_heldout), y_heldout)
    res.reason = "; ".join(_remarks(res, len(np.unique(x))))


def _remarks(res: FitResult, n_x: int) -> list[str]:
    """What weakens an ok fit's extrapolation: no points to spare (an exact fit of a budget curve of 3-5
    runs), or a slope held at the search's bound (|c| = C_MAX: the data asked for more)."""
    k = bnsl.n_params(res.n_breaks) if res.form == "bnsl" else len(forms.PARAM_NAMES[res.form])
    out = [f"{k} parameters for {n_x} distinct x: an exact fit, weak evidence for extrapolation"] if k >= n_x else []
    at_bound = [name for name, v in res.params.items()
                if re.fullmatch(r"c\d?", name) and abs(v) >= bnsl.C_MAX * (1 - 1e-6)]  # slopes: c, c0, c1, ...
    if at_bound:
        out.append(f"{', '.join(at_bound)} at the slope bound +-{bnsl.C_MAX:g}")
    return out


def fit(form: str, x, y, x_heldout=None, y_heldout=None, breaks="auto", cfg=None, backend="numba") -> FitResult:
    """Fit `form` ("bnsl", "m1".."m4") to one curve; see fit_bnsl / fit_form."""
    if form == "bnsl":
        return fit_bnsl(x, y, x_heldout, y_heldout, breaks=breaks, cfg=cfg, backend=backend)
    if form in forms.FORMS:
        return fit_form(form, x, y, x_heldout, y_heldout, cfg=cfg)
    raise ValueError(f"unknown form {form!r}; choose from {', '.join(ALL_FORMS)}")
