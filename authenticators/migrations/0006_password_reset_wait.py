"""The minute between reset e-mails to a Care Identity, whichever journey asks (PasswordResetWait)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('authenticators', '0005_authenticators_without_device_throttle'),
    ]

    operations = [
        migrations.CreateModel(
            name='PasswordResetWait',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=64, unique=True)),
                ('emailed_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
    ]
