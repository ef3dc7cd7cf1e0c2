"""Broken Neural Scaling Law (Caballero et al. 2022, https://arxiv.org/abs/2210.14891).

    y = a + b * x^(-c0) * prod_{i=1..n} (1 + (x / d_i)^(1 / f_i))^(-c_i * f_i)

Everything here works in log space, on z = log x, with the parameter vector

    theta = [a, log b, c0, c_1, log d_1, f_1, ..., c_n, log d_n, f_n]   (3 + 3n values)

so that log y = logaddexp(log a, L) with L = log b - c0 z - sum_i c_i f_i softplus((z - log d_i) / f_i).
softplus and logaddexp are evaluated in their stable forms: no exp of a large number, no 0 * inf.

Two implementations of the same formulas, kept side by side so tests can hold one against the other
(STYLE.md rule 8): plain NumPy (`*_np`, also the "no Numba" benchmark path) and Numba kernels (`*_nb`).
The kernels are small: log prediction, loss over many parameter vectors in parallel, residuals with the
analytic Jacobian, and the variable-projection grid search used to find starting points.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

F_MIN = 1e-4  # smallest sharpness; u = (z - log d) / f stays finite
C_MAX = 20.0  # largest |log-log slope| (change) the search accepts


def n_params(n_breaks: int) -> int:
    """Number of BNSL parameters for n breaks: a, b, c0 and (c_i, d_i, f_i) per break."""
    return 3 + 3 * n_breaks


def param_names(n_breaks: int) -> list[str]:
    """Names in the natural parameterization: a, b, c0, c1, d1, f1, ..."""
    names = ["a", "b", "c0"]
    for i in range(1, n_breaks + 1):
        names += [f"c{i}", f"d{i}", f"f{i}"]
    return names


def exp_or_inf(v: float) -> float:
    """exp(v), inf past float64's range (math.exp raises there)."""
    return math.exp(v) if v < 709.78 else math.inf


def log_b_of(params: dict[str, float]) -> float:
    """log b of named parameters: their log_b, or log(b) where only b is given."""
    return params["log_b"] if "log_b" in params else math.log(params["b"])


def to_natural(theta: np.ndarray, z0: float = 0.0) -> dict[str, float]:
    """Internal theta (on z - z0) to named natural parameters {a, b, log_b, c0, c1, d1, f1, ...}.

    b is the power law's scale at x = 1, which can leave float64's range on data far from 1 (x
    in FLOPs, ~1e20, with a steep c0 left of an early break: b = e^(c0 log x) ~ 1e-300); log_b
    is kept beside it and is what from_natural and predictions use. b is then 0 or inf."""
    theta = np.asarray(theta, dtype=np.float64)
    n = (len(theta) - 3) // 3
    # L = lb' - c0 (z - z0) - ... = (lb' + c0 z0) - c0 z - ...; break positions shift by z0.
    log_b = float(theta[1] + theta[2] * z0)
    out = {"a": float(theta[0]), "b": exp_or_inf(log_b), "log_b": log_b, "c0": float(theta[2])}
    for i in range(n):
        c, ld, f = theta[3 + 3 * i: 6 + 3 * i]
        out[f"c{i + 1}"] = float(c)
        out[f"d{i + 1}"] = float(np.exp(ld + z0))
        out[f"f{i + 1}"] = float(f)
    return out


def from_natural(params: dict[str, float], z0: float = 0.0) -> np.ndarray:
    """Inverse of `to_natural` (log_b, or log(b) where only b is given)."""
    n = sum(1 for k in params if k.startswith("d"))
    theta = [params["a"], log_b_of(params) - params["c0"] * z0, params["c0"]]
    for i in range(1, n + 1):
        theta += [params[f"c{i}"], math.log(params[f"d{i}"]) - z0, params[f"f{i}"]]
    return np.array(theta, dtype=np.float64)


# ---------------------------------------------------------------- NumPy reference


def _softplus_np(u):
    return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


def _sigmoid_np(u):
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_bnsl_np(theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log y at z = log x for one theta (internal parameterization), NumPy."""
    theta = np.asarray(theta, dtype=np.float64)
    n = (len(theta) - 3) // 3
    L = theta[1] - theta[2] * z
    for i in range(n):
        c, ld, f = theta[3 + 3 * i], theta[4 + 3 * i], max(theta[5 + 3 * i], F_MIN)
        L = L - c * f * _softplus_np((z - ld) / f)
    a = theta[0]
    if a > 0:
        return np.logaddexp(math.log(a), L)
    return L


def bnsl(x, a: float, b: float, c0: float, c=(), d=(), f=()) -> np.ndarray:
    """y = a + b x^(-c0) prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i), evaluated in log space.

    Args:
        x: positive inputs (array-like).
        a: limit as x -> infinity (>= 0), b > 0 offset, c0 first log-log slope.
        c, d, f: per break the slope change, position (> 0) and sharpness (> 0, smaller is sharper).

    Returns:
        y, finite for any finite parameters (log y is clipped to the float64 range before exp).
    """
    theta = [a, math.log(b), c0]
    for ci, di, fi in zip(c, d, f):
        theta += [ci, math.log(di), fi]
    logy = log_bnsl_np(np.array(theta), np.log(np.asarray(x, dtype=np.float64)))
    return np.exp(np.clip(logy, -745.0, 709.0))


def loss_many_np(thetas: np.ndarray, z: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Mean squared log error for each row of thetas (P, 3+3n); non-finite -> inf. NumPy, vectorized."""
    thetas = np.atleast_2d(np.asarray(thetas, dtype=np.float64))
    n = (thetas.shape[1] - 3) // 3
    L = thetas[:, 1:2] - thetas[:, 2:3] * z[None, :]
    for i in range(n):
        c = thetas[:, 3 + 3 * i, None]
        ld = thetas[:, 4 + 3 * i, None]
        f = np.maximum(thetas[:, 5 + 3 * i, None], F_MIN)
        L = L - c * f * _softplus_np((z[None, :] - ld) / f)
    a = thetas[:, 0:1]
    with np.errstate(divide="ignore"):
        la = np.where(a > 0, np.log(np.where(a > 0, a, 1.0)), -np.inf)
    pred = np.where(a > 0, np.logaddexp(la, L), L)
    out = np.mean((pred - logy[None, :]) ** 2, axis=1)
    return np.where(np.isfinite(out), out, np.inf)


def resid_jac_np(theta: np.ndarray, z: np.ndarray, logy: np.ndarray):
    """Residuals r = log yhat - log y (N,) and Jacobian dr/dtheta (N, 3+3n), NumPy.

    With s = exp(L - log yhat) (share of the power-law part in yhat):
    d/da = 1/yhat, d/dlog b = s, d/dc0 = -z s, d/dc_i = -f_i sp(u_i) s, d/dlog d_i = c_i sigmoid(u_i) s,
    d/df_i = -c_i (sp(u_i) - u_i sigmoid(u_i)) s, where u_i = (z - log d_i) / f_i.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n = (len(theta) - 3) // 3
    J = np.empty((len(z), len(theta)))
    L = theta[1] - theta[2] * z
    sps, sigs, us = [], [], []
    for i in range(n):
        c, ld, f = theta[3 + 3 * i], theta[4 + 3 * i], max(theta[5 + 3 * i], F_MIN)
        u = (z - ld) / f
        sp = _softplus_np(u)
        L = L - c * f * sp
        sps.append(sp), sigs.append(_sigmoid_np(u)), us.append(u)
    a = theta[0]
    pred = np.logaddexp(math.log(a), L) if a > 0 else L
    s = np.exp(L - pred)
    J[:, 0] = np.exp(-pred)
    J[:, 1] = s
    J[:, 2] = -z * s
    for i in range(n):
        c, f = theta[3 + 3 * i], max(theta[5 + 3 * i], F_MIN)
        J[:, 3 + 3 * i] = -f * sps[i] * s
        J[:, 4 + 3 * i] = c * sigs[i] * s
        J[:, 5 + 3 * i] = -c * (sps[i] - us[i] * sigs[i]) * s
    return pred - logy, J


def break_basis(z: np.ndarray, ld_grid: np.ndarray, f_grid: np.ndarray) -> np.ndarray:
    """Design columns for the linear part: [1, -z, -f sp((z - ld)/f) for ld in ld_grid for f in f_grid]."""
    cols = [np.ones_like(z), -z]
    for ld in ld_grid:
        for f in f_grid:
            cols.append(-f * _softplus_np((z - ld) / f))
    return np.stack(cols, axis=1)


def _weights_targets(y: np.ndarray, a: float):
    # For fixed a, log(y - a) is linear in (log b, c0, c_i). Weighting by ((y - a) / y)^2 makes the
    # linear residual a first-order match of the residual in log y (d log y = (y - a)/y d log(y - a)).
    t = np.log(y - a)
    w = ((y - a) / y) ** 2
    return t, w


def vp_search_np(y: np.ndarray, a_grid: np.ndarray, basis: np.ndarray, combos: np.ndarray) -> np.ndarray:
    """Approximate log-space loss for every (a, break combination): NumPy path of `vp_search_nb`.

    For each a in a_grid and each row of combos (indices into the break columns of `basis`), solve the
    weighted linear least squares for (log b, c0, c_i) through the Gram matrix (normal equations,
    Cholesky with a pivot check) and return the weighted mean squared residual, (A, C); inf where the
    columns are (near) collinear or a slope exceeds C_MAX.
    """
    N, Q = basis.shape
    A, n = len(a_grid), combos.shape[1]
    k = 2 + n
    C = combos.shape[0]
    idx = np.concatenate([np.zeros((C, 1), np.int64), np.ones((C, 1), np.int64), combos + 2], axis=1)
    out = np.empty((A, C))
    for ia in range(A):
        t, w = _weights_targets(y, a_grid[ia])
        Xw = basis * w[:, None]
        G = basis.T @ Xw
        g = Xw.T @ t
        tt = float(t @ (w * t))
        M = G[idx[:, :, None], idx[:, None, :]]  # (C, k, k)
        v = g[idx]  # (C, k)
        ok = np.ones(C, dtype=bool)
        Lc = np.zeros((C, k, k))
        for i in range(k):
            for j in range(i + 1):
                s = M[:, i, j] - np.sum(Lc[:, i, :j] * Lc[:, j, :j], axis=1)
                if i == j:
                    ok &= s > 1e-10 * M[:, i, i]
                    Lc[:, i, i] = np.sqrt(np.where(ok, s, 1.0))
                else:
                    Lc[:, i, j] = s / Lc[:, j, j]
        yv = np.zeros((C, k))
        for i in range(k):
            yv[:, i] = (v[:, i] - np.sum(Lc[:, i, :i] * yv[:, :i], axis=1)) / Lc[:, i, i]
        beta = np.zeros((C, k))
        for i in range(k - 1, -1, -1):
            beta[:, i] = (yv[:, i] - np.sum(Lc[:, i + 1:, i] * beta[:, i + 1:], axis=1)) / Lc[:, i, i]
        ok &= np.all(np.abs(beta[:, 1:]) <= C_MAX, axis=1)
        rss = tt - np.sum(yv * yv, axis=1)  # = tt - beta'v (v = L yv, beta = L'^-1 yv)
        out[ia] = np.where(ok, np.maximum(rss, 0.0) / N, np.inf)
    return out


# ---------------------------------------------------------------- Numba kernels


@nb.njit(cache=True, inline="always")
def _softplus(u):
    if u > 0.0:
        return u + math.log1p(math.exp(-u))
    return math.log1p(math.exp(u))


@nb.njit(cache=True, inline="always")
def _sigmoid(u):
    if u >= 0.0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


@nb.njit(cache=True)
def _log_pred(theta, n, zj):
    """(log yhat, L) at one point."""
    L = theta[1] - theta[2] * zj
    for i in range(n):
        f = max(theta[5 + 3 * i], F_MIN)
        L -= theta[3 + 3 * i] * f * _softplus((zj - theta[4 + 3 * i]) / f)
    a = theta[0]
    if a > 0.0:
        la = math.log(a)
        m = max(la, L)
        return m + math.log1p(math.exp(-abs(la - L))), L
    return L, L


@nb.njit(cache=True)
def log_bnsl_nb(theta, z):
    """log y at every z for one theta (internal parameterization), Numba."""
    n = (theta.shape[0] - 3) // 3
    out = np.empty(z.shape[0])
    for j in range(z.shape[0]):
        out[j] = _log_pred(theta, n, z[j])[0]
    return out


@nb.njit(cache=True, parallel=True)
def loss_many_nb(thetas, z, logy):
    """Mean squared log error for each row of thetas (P, 3+3n), in parallel over rows; non-finite -> inf."""
    P = thetas.shape[0]
    n = (thetas.shape[1] - 3) // 3
    N = z.shape[0]
    out = np.empty(P)
    for p in nb.prange(P):
        th = thetas[p]
        acc = 0.0
        for j in range(N):
            r = _log_pred(th, n, z[j])[0] - logy[j]
            acc += r * r
        acc /= N
        out[p] = acc if math.isfinite(acc) else np.inf
    return out


@nb.njit(cache=True)
def resid_jac_nb(theta, z, logy):
    """Residuals r = log yhat - log y and analytic Jacobian (see `resid_jac_np`), Numba."""
    n = (theta.shape[0] - 3) // 3
    N = z.shape[0]
    r = np.empty(N)
    J = np.empty((N, theta.shape[0]))
    a = theta[0]
    la = math.log(a) if a > 0.0 else 0.0
    for j in range(N):
        zj = z[j]
        L = theta[1] - theta[2] * zj
        for i in range(n):
            c = theta[3 + 3 * i]
            f = max(theta[5 + 3 * i], F_MIN)
            u = (zj - theta[4 + 3 * i]) / f
            sp = _softplus(u)
            sg = _sigmoid(u)
            L -= c * f * sp
            J[j, 3 + 3 * i] = -f * sp  # scaled by s below
            J[j, 4 + 3 * i] = c * sg
            J[j, 5 + 3 * i] = -c * (sp - u * sg)
        if a > 0.0:
            m = max(la, L)
            pred = m + math.log1p(math.exp(-abs(la - L)))
        else:
            pred = L
        s = math.exp(L - pred)
        r[j] = pred - logy[j]
        J[j, 0] = math.exp(-pred)
        J[j, 1] = s
        J[j, 2] = -zj * s
        for i in range(3 * n):
            J[j, 3 + i] *= s
    return r, J


@nb.njit(cache=True)
def break_basis_nb(z, ld_grid, f_grid):
    """Numba twin of `break_basis`: (N, 2 + D*F) columns [1, -z, -f sp((z - ld)/f) ...]."""
    N, D, F = z.shape[0], ld_grid.shape[0], f_grid.shape[0]
    out = np.empty((N, 2 + D * F))
    for j in range(N):
        out[j, 0] = 1.0
        out[j, 1] = -z[j]
        for p in range(D):
            for q in range(F):
                f = f_grid[q]
                out[j, 2 + p * F + q] = -f * _softplus((z[j] - ld_grid[p]) / f)
    return out


@nb.njit(cache=True)
def _gram(y, a, basis):
    """(G, g, t' W t) with G = X' W X, g = X' W t for t = log(y - a), w = ((y - a)/y)^2.

    Plain loops, not BLAS: this runs inside prange threads, where a threaded BLAS call oversubscribes the cores.
    """
    N, Q = basis.shape
    G = np.zeros((Q, Q))
    g = np.zeros(Q)
    tt = 0.0
    for j in range(N):
        t = math.log(y[j] - a)
        w = (y[j] - a) / y[j]
        w *= w
        tt += w * t * t
        for p in range(Q):
            xw = basis[j, p] * w
            g[p] += xw * t
            for q in range(p + 1):
                G[p, q] += xw * basis[j, q]
    for p in range(Q):
        for q in range(p + 1, Q):
            G[p, q] = G[q, p]
    return G, g, tt


@nb.njit(cache=True)
def _solve_subset(G, g, idx, k, M, Lc, v, yv, beta):
    """Cholesky solve of G[idx, idx] beta = g[idx]; returns False if a pivot is (near) zero."""
    for i in range(k):
        v[i] = g[idx[i]]
        for j in range(k):
            M[i, j] = G[idx[i], idx[j]]
    for i in range(k):
        for j in range(i + 1):
            s = M[i, j]
            for m in range(j):
                s -= Lc[i, m] * Lc[j, m]
            if i == j:
                if not s > 1e-10 * M[i, i]:
                    return False
                Lc[i, i] = math.sqrt(s)
            else:
                Lc[i, j] = s / Lc[j, j]
    for i in range(k):
        s = v[i]
        for m in range(i):
            s -= Lc[i, m] * yv[m]
        yv[i] = s / Lc[i, i]
    for i in range(k - 1, -1, -1):
        s = yv[i]
        for m in range(i + 1, k):
            s -= Lc[m, i] * beta[m]
        beta[i] = s / Lc[i, i]
    return True


@nb.njit(cache=True)
def _last_column_runs(combos):
    """Starts of the runs of combinations that share all columns but the last, whose last column goes
    up by one along the run (`fit._combos` orders them so); the final entry is C."""
    C, n = combos.shape
    starts = np.empty(C + 1, np.int64)
    r = 0
    for ic in range(C):
        same = ic > 0 and n > 0 and combos[ic, n - 1] == combos[ic - 1, n - 1] + 1
        for i in range(n - 1):
            same = same and combos[ic, i] == combos[ic - 1, i]
        if not same:
            starts[r] = ic
            r += 1
    starts[r] = C
    return starts[: r + 1]


@nb.njit(cache=True, parallel=True, error_model="numpy")  # no zero-division checks in the loops
def vp_search_nb(y, a_grid, basis, combos):
    """Approximate log-space loss for every (a, break combination), (A, C); see `vp_search_np`.

    Parallel over a; the Gram matrix of all candidate columns is built once per a, so each candidate
    costs a (2+n)x(2+n) Cholesky solve, independent of the number of points. The combinations come in
    runs that share every column but the last (`_last_column_runs`): the shared (1+n)x(1+n) block is
    factored once per run, and for the run's last columns (consecutive in the Gram matrix) the last
    Cholesky row, forward and back substitution are loops over the run, independent from one
    candidate to the next. With L = [[Lp, 0], [l', dl]] (Lp l = G[prefix, q], dl^2 = G[q, q] - l'l):
    the residual is t'Wt - |yv_p|^2 - e^2 / dl^2 with e = g[q] - l'yv_p, the last coefficient
    e / dl^2, and the others bp - (e / dl^2) Lp'^-1 l (bp: the prefix system's own solution).
    """
    N, Q = basis.shape
    A = a_grid.shape[0]
    C, n = combos.shape
    k = 2 + n
    p = k - 1  # the prefix: 1, -z and the first n - 1 break columns
    runs = _last_column_runs(combos)
    R = 1
    for r in range(runs.shape[0] - 1):
        R = max(R, runs[r + 1] - runs[r])
    out = np.empty((A, C))
    for ia in nb.prange(A):
        G, g, tt = _gram(y, a_grid[ia], basis)
        Lp = np.zeros((p, p))
        inv = np.empty(p)  # 1 / Lp[i, i]
        yv = np.empty(p)  # Lp yv = g[prefix]
        bp = np.empty(p)  # Lp' bp = yv
        idx = np.empty(p, np.int64)
        lt = np.empty((p, R))  # l for each candidate of the run (columns)
        ht = np.empty((p, R))  # Lp'^-1 l
        for r in range(runs.shape[0] - 1):
            r0, r1 = runs[r], runs[r + 1]
            m_run = r1 - r0
            idx[0] = 0
            for i in range(1, p):
                idx[i] = 1 if i == 1 else combos[r0, i - 2] + 2
            q0 = combos[r0, n - 1] + 2 if n > 0 else 1
            ok = True
            for i in range(p):  # the prefix's Cholesky factor, forward and back substitution
                gi = idx[i]
                for j in range(i):
                    s = G[gi, idx[j]]
                    for m in range(j):
                        s -= Lp[i, m] * Lp[j, m]
                    Lp[i, j] = s * inv[j]
                s = G[gi, gi]
                for m in range(i):
                    s -= Lp[i, m] * Lp[i, m]
                if not s > 1e-10 * G[gi, gi]:
                    ok = False
                    break
                inv[i] = 1.0 / math.sqrt(s)
                s = g[gi]
                for m in range(i):
                    s -= Lp[i, m] * yv[m]
                yv[i] = s * inv[i]
            if not ok:
                for ic in range(r0, r1):
                    out[ia, ic] = np.inf
                continue
            rest = tt
            for i in range(p):
                rest -= yv[i] * yv[i]
            for i in range(p - 1, -1, -1):
                s = yv[i]
                for m in range(i + 1, p):
                    s -= Lp[m, i] * bp[m]
                bp[i] = s * inv[i]
            for i in range(p):  # l = Lp^-1 G[prefix, q] for every q of the run
                gi = idx[i]
                for t in range(m_run):
                    lt[i, t] = G[gi, q0 + t]
                for m in range(i):
                    c = Lp[i, m]
                    for t in range(m_run):
                        lt[i, t] -= c * lt[m, t]
                for t in range(m_run):
                    lt[i, t] *= inv[i]
            for i in range(p - 1, -1, -1):  # h = Lp'^-1 l
                for t in range(m_run):
                    ht[i, t] = lt[i, t]
                for m in range(i + 1, p):
                    c = Lp[m, i]
                    for t in range(m_run):
                        ht[i, t] -= c * ht[m, t]
                for t in range(m_run):
                    ht[i, t] *= inv[i]
            for t in range(m_run):
                q = q0 + t
                d = G[q, q]
                e = g[q]
                for i in range(p):
                    d -= lt[i, t] * lt[i, t]
                    e -= lt[i, t] * yv[i]
                if not d > 1e-10 * G[q, q]:
                    out[ia, r0 + t] = np.inf
                    continue
                bl = e / d  # yl / dl = e / dl^2; yl^2 = e bl: no square root
                ok = abs(bl) <= C_MAX
                for i in range(1, p):
                    ok = ok and abs(bp[i] - bl * ht[i, t]) <= C_MAX
                out[ia, r0 + t] = max(rest - e * bl, 0.0) / N if ok else np.inf
    return out


@nb.njit(cache=True, parallel=True)
def vp_thetas_nb(y, a_grid, basis, combos, sel, ld_grid, f_grid):
    """Full theta (M, 3+3n) of selected candidates (flat indices into the (A, C) search output)."""
    N = basis.shape[0]
    A = a_grid.shape[0]
    C, n = combos.shape
    k = 2 + n
    F = f_grid.shape[0]
    M = sel.shape[0]
    out = np.empty((M, 3 + 3 * n))
    tw = np.empty((A, 2, N))  # log(y - a) and its weight, once per a (not once per candidate)
    for ia in range(A):
        for j in range(N):
            tw[ia, 0, j] = math.log(y[j] - a_grid[ia])
            w = (y[j] - a_grid[ia]) / y[j]
            tw[ia, 1, j] = w * w
    for r in nb.prange(M):
        ia = sel[r] // C
        ic = sel[r] % C
        a = a_grid[ia]
        G = np.zeros((k, k))
        g = np.zeros(k)
        cols = np.empty(k, np.int64)
        cols[0] = 0
        cols[1] = 1
        for i in range(n):
            cols[2 + i] = combos[ic, i] + 2
        for j in range(N):
            t = tw[ia, 0, j]
            w = tw[ia, 1, j]
            for p in range(k):
                xw = basis[j, cols[p]] * w
                g[p] += xw * t
                for q in range(k):
                    G[p, q] += xw * basis[j, cols[q]]
        idx = np.arange(k)
        Mw = np.empty((k, k))
        Lc = np.zeros((k, k))
        v = np.empty(k)
        yv = np.empty(k)
        beta = np.zeros(k)
        if not _solve_subset(G, g, idx, k, Mw, Lc, v, yv, beta):
            for i in range(3 + 3 * n):
                out[r, i] = np.nan
            continue
        out[r, 0] = a
        out[r, 1] = beta[0]
        out[r, 2] = beta[1]
        for i in range(n):
            col = combos[ic, i]
            out[r, 3 + 3 * i] = beta[2 + i]
            out[r, 4 + 3 * i] = ld_grid[col // F]
            out[r, 5 + 3 * i] = f_grid[col % F]
    return out


def vp_thetas_np(y, a_grid, basis, combos, sel, ld_grid, f_grid):
    """NumPy twin of `vp_thetas_nb`: the selected candidates' weighted normal equations, solved as one stack."""
    C, n = combos.shape
    F = len(f_grid)
    sel = np.asarray(sel, dtype=np.int64)
    ia, ic = np.divmod(sel, C)
    a = a_grid[ia]  # (M,)
    cols = np.concatenate([np.zeros((len(sel), 1), np.int64), np.ones((len(sel), 1), np.int64),
                           combos[ic] + 2], axis=1)  # (M, k)
    t = np.log(y[None, :] - a[:, None])  # (M, N)
    w = ((y[None, :] - a[:, None]) / y[None, :]) ** 2
    X = np.moveaxis(basis[:, cols], 0, 1)  # (M, N, k)
    Xw = X * w[:, :, None]
    G = np.einsum("mnp,mnq->mpq", Xw, X)
    g = np.einsum("mnp,mn->mp", Xw, t)
    out = np.full((len(sel), 3 + 3 * n), np.nan)
    try:
        beta = np.linalg.solve(G, g[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # a singular candidate: solve one by one, NaN for the singular ones
        beta = np.full(g.shape, np.nan)
        for r in range(len(sel)):
            try:
                beta[r] = np.linalg.solve(G[r], g[r])
            except np.linalg.LinAlgError:
                pass
    out[:, 0], out[:, 1], out[:, 2] = a, beta[:, 0], beta[:, 1]
    for i in range(n):
        col = combos[ic, i]
        out[:, 3 + 3 * i], out[:, 4 + 3 * i], out[:, 5 + 3 * i] = beta[:, 2 + i], ld_grid[col // F], f_grid[col % F]
    return out


# ---------------------------------------------------------------- refinement: projected Levenberg-Marquardt
#
# A small box-constrained Levenberg-Marquardt loop replaces scipy.optimize.least_squares(method="trf"):
# with 3-12 parameters and <= a few hundred points its per-iteration Python overhead (SVDs, scaling
# vectors, trust-region bookkeeping) was ~90 % of the fit time. Marquardt's damping lambda * diag(J'J)
# plays the role of least_squares' x_scale="jac"; bounds are kept by an active set (a parameter at a
# bound whose gradient points outward is held fixed for that step) and by clipping the trial point.
LM_FTOL = 1e-10  # stop when an accepted step lowers the loss by less than this fraction
LM_XTOL = 1e-10  # ... or moves theta by less than this (relative)


@nb.njit(cache=True)
def _chol_solve(A, b, free):
    """Solve A[free, free] d = b[free] by Cholesky (d = 0 elsewhere); False if not positive definite."""
    P = b.shape[0]
    idx = np.empty(P, np.int64)
    k = 0
    for i in range(P):
        if free[i]:
            idx[k] = i
            k += 1
    L = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1):
            s = A[idx[i], idx[j]]
            for m in range(j):
                s -= L[i, m] * L[j, m]
            if i == j:
                if not s > 0.0:
                    return np.zeros(P), False
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    yv = np.empty(k)
    for i in range(k):
        s = b[idx[i]]
        for m in range(i):
            s -= L[i, m] * yv[m]
        yv[i] = s / L[i, i]
    d = np.zeros(P)
    for i in range(k - 1, -1, -1):
        s = yv[i]
        for m in range(i + 1, k):
            s -= L[m, i] * d[idx[m]]
        d[idx[i]] = s / L[i, i]
    return d, True


@nb.njit(cache=True)
def lm_nb(theta0, lo, hi, z, logy, max_nfev):
    """Box-constrained Levenberg-Marquardt on `resid_jac_nb`; returns (theta, mean squared residual, nfev)."""
    P = theta0.shape[0]
    N = z.shape[0]
    th = np.minimum(np.maximum(theta0, lo), hi)
    r, J = resid_jac_nb(th, z, logy)
    nfev = 1
    cost = 0.0
    for j in range(N):
        cost += r[j] * r[j]
    if not math.isfinite(cost):
        return th, np.inf, nfev
    lam = 1e-3
    A = np.empty((P, P))
    g = np.empty(P)
    free = np.empty(P, np.bool_)
    M = np.empty((P, P))
    while nfev < max_nfev:
        for p in range(P):
            s = 0.0
            for j in range(N):
                s += J[j, p] * r[j]
            g[p] = s
            for q in range(p + 1):
                s = 0.0
                for j in range(N):
                    s += J[j, p] * J[j, q]
                A[p, q] = s
                A[q, p] = s
        dmax = 0.0
        for p in range(P):
            dmax = max(dmax, A[p, p])
            free[p] = not ((th[p] <= lo[p] and g[p] > 0.0) or (th[p] >= hi[p] and g[p] < 0.0))
        done = True
        accepted = False
        while nfev < max_nfev and lam < 1e16:
            for p in range(P):
                for q in range(P):
                    M[p, q] = A[p, q]
                M[p, p] += lam * max(A[p, p], 1e-12 * dmax + 1e-300)
            d, ok = _chol_solve(M, -g, free)
            if not ok:
                lam *= 10.0
                continue
            trial = np.minimum(np.maximum(th + d, lo), hi)
            r2, J2 = resid_jac_nb(trial, z, logy)
            nfev += 1
            cost2 = 0.0
            for j in range(N):
                cost2 += r2[j] * r2[j]
            if math.isfinite(cost2) and cost2 < cost:
                step = 0.0
                norm = 0.0
                for p in range(P):
                    step += (trial[p] - th[p]) ** 2
                    norm += th[p] ** 2
                done = cost - cost2 <= LM_FTOL * cost or math.sqrt(step) <= LM_XTOL * (math.sqrt(norm) + LM_XTOL)
                th, r, J, cost = trial, r2, J2, cost2
                lam = max(lam / 3.0, 1e-12)
                accepted = True
                break
            lam *= 4.0
        if done or not accepted:
            break
    return th, cost / N, nfev


def lm_np(theta0, lo, hi, z, logy, max_nfev):
    """NumPy twin of `lm_nb` (same steps, on `resid_jac_np` and numpy.linalg)."""
    th = np.clip(np.asarray(theta0, dtype=np.float64), lo, hi)
    r, J = resid_jac_np(th, z, logy)
    nfev, cost, lam = 1, float(r @ r), 1e-3
    if not math.isfinite(cost):
        return th, math.inf, nfev
    while nfev < max_nfev:
        g, A = J.T @ r, J.T @ J
        dg = np.diag(A)
        free = ~(((th <= lo) & (g > 0)) | ((th >= hi) & (g < 0)))
        fi = np.flatnonzero(free)
        done, accepted = True, False
        while nfev < max_nfev and lam < 1e16:
            M = A + np.diag(lam * np.maximum(dg, 1e-12 * dg.max() + 1e-300))
            d = np.zeros_like(th)
            try:
                Lc = np.linalg.cholesky(M[np.ix_(fi, fi)])
                d[fi] = np.linalg.solve(Lc.T, np.linalg.solve(Lc, -g[fi]))
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            trial = np.clip(th + d, lo, hi)
            r2, J2 = resid_jac_np(trial, z, logy)
            nfev += 1
            cost2 = float(r2 @ r2)
            if math.isfinite(cost2) and cost2 < cost:
                step = float(np.sqrt(np.sum((trial - th) ** 2)))
                done = cost - cost2 <= LM_FTOL * cost or step <= LM_XTOL * (float(np.sqrt(th @ th)) + LM_XTOL)
                th, r, J, cost = trial, r2, J2, cost2
                lam = max(lam / 3.0, 1e-12)
                accepted = True
                break
            lam *= 4.0
        if done or not accepted:
            break
    return th, cost / len(z), nfev
