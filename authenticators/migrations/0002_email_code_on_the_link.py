"""The e-mail → One Time Password steps are shared by every type (authenticators/email_steps.py): the
code moves from the Authenticator app's journey state (AppRegistration.email_code) to the link itself."""

import django.db.models.deletion
from django.db import migrations, models


def codes_to_links(apps, schema_editor):
    RegistrationLink = apps.get_model("authenticators", "RegistrationLink")
    AppRegistration = apps.get_model("authenticators", "AppRegistration")
    for link_id, code_id in AppRegistration.objects.filter(email_code__isnull=False).values_list("link_id", "email_code_id"):
        RegistrationLink.objects.filter(pk=link_id).update(email_code_id=code_id)


def codes_to_app_registrations(apps, schema_editor):
    RegistrationLink = apps.get_model("authenticators", "RegistrationLink")
    AppRegistration = apps.get_model("authenticators", "AppRegistration")
    for link_id, code_id in RegistrationLink.objects.filter(email_code__isnull=False).values_list("pk", "email_code_id"):
        AppRegistration.objects.filter(link_id=link_id).update(email_code_id=code_id)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0009_outgoing_email'),
        ('authenticators', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='registrationlink',
            name='email_code',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='accounts.emailonetimepassword'),
        ),
        migrations.RunPython(codes_to_links, codes_to_app_registrations),
        migrations.RemoveField(
            model_name='appregistration',
            name='email_code',
        ),
    ]
