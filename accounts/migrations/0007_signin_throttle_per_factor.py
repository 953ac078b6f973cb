from django.db import migrations, models


class Migration(migrations.Migration):
    """Sign-in throttling counted per factor: wrong passwords (lock at 100) and wrong codes (lock at 30)."""

    dependencies = [
        ("accounts", "0006_name_search_indexes"),
    ]

    operations = [
        migrations.RenameField("user", "signin_failures", "password_failures"),
        migrations.RenameField("user", "signin_blocked_until", "password_blocked_until"),
        migrations.AlterField(
            model_name="user", name="password_failures",
            field=models.PositiveIntegerField(default=0, verbose_name="consecutive wrong passwords"),
        ),
        migrations.AddField(
            model_name="user", name="code_failures",
            field=models.PositiveIntegerField(default=0, verbose_name="consecutive wrong security codes"),
        ),
        migrations.AddField(model_name="user", name="code_blocked_until", field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(
            model_name="user", name="lock_reason",
            field=models.CharField(blank=True, default="", max_length=10, choices=[
                ("passwords", "Too many wrong passwords"), ("codes", "Too many wrong security codes")]),
        ),
        # Locks from before: they came from 30 failures of either factor, and only an RA lifted them.
        migrations.RunSQL("UPDATE accounts_user SET lock_reason = 'codes' WHERE locked_at IS NOT NULL",
                          reverse_sql=migrations.RunSQL.noop),
    ]
