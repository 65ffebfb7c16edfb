"""Background work for licensing: large sheet imports."""

from celery import shared_task

from licensing.services import import_job_run


@shared_task(acks_late=True)
def import_job_run_task(job_id: int) -> None:
    """Check or import the sheet of one import job."""
    import_job_run(job_id=job_id)
