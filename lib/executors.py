"""How a sweep runs one job: every executor has ``run(job)`` and writes the same result files.

* :class:`InProcess` calls :func:`lib.evaluate.evaluate` (and the footprint) in this process;
* :class:`Papermill` executes the per-configuration notebook, which makes the run's page in ``book/runs/``;
* :class:`FidelityOnly` runs only the teacher-forced fidelity pass of a finished configuration.

The Ray executor decodes pending jobs' batches on a cluster first (:func:`lib.cluster.sweep_on_cluster`) and
then hands each job to one of these, which reads the merged result. All of them go through ``evaluate``, whose
per-configuration lock (:mod:`lib.locks`) keeps two of them from decoding one configuration at once.

>>> InProcess(Path("r"), Path("r/footprint")).name
'in-process'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grids import Job
from .notebooks import execute_notebook


def run_job(job: Job, results_dir: Path, footprint_dir: Path, force: bool = False, data: str | None = None,
            progress: bool = True, retry_failed: bool = False, refresh_outdated: bool = False) -> dict[str, Any]:
    """What the per-configuration notebook does, without papermill."""
    from .evaluate import evaluate  # looked up at call time, so tests can stand in for a run
    from .footprint import measure_footprint

    out = {"evaluate": evaluate(job.config, data=data, results_dir=results_dir, force=force, progress=progress,
                                retry_failed=retry_failed, refresh_outdated=refresh_outdated)}
    if job.footprint:
        out["footprint"] = measure_footprint(job.config.quant, model=job.footprint_model, results_dir=footprint_dir,
                                             force=force, data=data, retry_failed=retry_failed,
                                             refresh_outdated=refresh_outdated)
    return out


@dataclass
class InProcess:
    """Run each job in this process (``sweep --no-notebooks``)."""

    results_dir: Path
    footprint_dir: Path
    force: bool = False
    data: str | None = None
    progress: bool = True
    retry_failed: bool = False
    refresh_outdated: bool = False
    name: str = "in-process"

    def run(self, job: Job) -> None:
        run_job(job, self.results_dir, self.footprint_dir, self.force, self.data, self.progress,
                self.retry_failed, self.refresh_outdated)


@dataclass
class Papermill(InProcess):
    """Execute ``notebooks/run_config.md`` for each job into ``runs_dir/<slug>.ipynb`` (the default)."""

    runs_dir: Path = Path("book/runs")
    name: str = "papermill"

    def run(self, job: Job) -> None:
        execute_notebook(job, Path(self.runs_dir), self.results_dir, self.footprint_dir, self.force, self.data,
                         retry_failed=self.retry_failed, refresh_outdated=self.refresh_outdated)


@dataclass
class FidelityOnly(InProcess):
    """Only the teacher-forced fidelity pass of each finished job (``sweep --fidelity-only``)."""

    name: str = "fidelity"

    def run(self, job: Job) -> None:
        from .fidelity import ensure_fidelity, job_lock

        with job_lock(self.results_dir, job.slug) as mine:  # two fidelity sweeps share the work
            if mine:
                ensure_fidelity(job.config, results_dir=self.results_dir, data=self.data, progress=self.progress,
                                force=self.force, retry_failed=self.retry_failed)
