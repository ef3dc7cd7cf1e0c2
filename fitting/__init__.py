"""Scaling-law fitting: Broken Neural Scaling Laws (Caballero et al. 2022) and baselines M1-M4, for
batches of curves in Arrow/Parquet/CSV tables and trainer run directories.

    from fitting import fit_bnsl, fit_form, read_table, curves_from_table, fit_curves
    r = fit_bnsl(x, y, x_heldout, y_heldout)       # FitResult: params, rmsle_*, report(), predict(x)
    print(r.report())

CLI: python -m fitting fit TABLE ... | python -m fitting runs RUN_DIR ...   (see fitting/__main__.py)
"""
from fitting.batch import fit_curve, fit_curves, results_table, summary
from fitting.bnsl import param_names
from fitting.fit import ALL_FORMS, FitError, FitResult, SearchConfig, fit_bnsl, fit_form, predict, rmsle
from fitting.tables import Curve, TableError, curves_from_table, read_run, read_table

__all__ = [
    "ALL_FORMS", "Curve", "FitError", "FitResult", "SearchConfig", "TableError", "curves_from_table",
    "fit_bnsl", "fit_curve", "fit_curves", "fit_form", "param_names", "predict", "read_run",
    "read_table", "results_table", "rmsle", "summary",
]
