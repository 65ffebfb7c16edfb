"""Background work for licensing: large sheet imports."""

from celery import shared_task

from licensing.services import import_job_run, import_job_sweep


@shared_task(acks_late=True)
def import_job_run_task(job_id: int) -> None:
    """Check or import the sheet of one import job."""
    import_job_run(job_id=job_id)


@shared_task(acks_late=True, ignore_result=True)
def import_job_sweep_task() -> int:
    """Queue again the import jobs whose message was lost or whose worker died."""
    return len(import_job_sweep())
