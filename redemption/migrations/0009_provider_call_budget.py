from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('redemption', '0008_sync_roles_for_reconciliation'),
    ]

    operations = [
        migrations.CreateModel(
            name='CallBudget',
            fields=[
                ('name', models.CharField(max_length=32, primary_key=True, serialize=False)),
                ('tat', models.FloatField(default=0)),
                ('paused_until', models.FloatField(default=0)),
            ],
        ),
    ]
