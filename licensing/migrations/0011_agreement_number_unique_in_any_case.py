import django.db.models.functions.text
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Upper


def refuse_numbers_held_in_two_cases(apps, schema_editor):
    """Name the agreements the new constraint would refuse, rather than fail on the first with IntegrityError."""
    Agreement = apps.get_model("licensing", "Agreement")
    clashes = (
        Agreement.objects.annotate(upper=Upper("number"))
        .values("program", "upper")
        .annotate(held=Count("id"))
        .filter(held__gt=1)
        .order_by("program", "upper")
    )
    named = []
    for clash in clashes[:20]:
        numbers = Agreement.objects.filter(program=clash["program"], number__iexact=clash["upper"])
        named.append(f"{clash['program']}: " + ", ".join(f"{a.number} (#{a.pk})" for a in numbers.order_by("pk")))
    if named:
        raise RuntimeError(
            "These agreement numbers are held more than once, in different cases; each is one agreement. "
            "Move the orders of the extra rows to the first and delete them (or correct a mistyped number), "
            "then migrate again:\n  " + "\n  ".join(named)
        )


class Migration(migrations.Migration):

    dependencies = [
        ('licensing', '0010_agreement_number_upper_index'),
        ('tenants', '0004_customer_name_unique_by_key'),
    ]

    operations = [
        migrations.RunPython(refuse_numbers_held_in_two_cases, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='agreement',
            name='agreement_number_unique_in_program',
        ),
        migrations.RemoveIndex(
            model_name='agreement',
            name='agreement_number_upper_idx',
        ),
        migrations.AddConstraint(
            model_name='agreement',
            constraint=models.UniqueConstraint(django.db.models.functions.text.Upper('number'), models.F('program'), name='agreement_number_unique_in_program', violation_error_message='This agreement number already exists in this program.'),
        ),
    ]
