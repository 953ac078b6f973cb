from django.db import migrations

# The Care Identity email domain allow list as the NHS publishes it (the part careid starts with);
# RA staff edit it in the admin from then on.
DOMAINS = [
    ("nhs.net", False),
    ("nhs.uk", True),
    ("gov.uk", True),
    ("ac.uk", True),
    ("mod.uk", False),
    ("gmail.com", False),
    ("googlemail.com", False),
    ("hotmail.com", False),
    ("hotmail.co.uk", False),
    ("yahoo.com", False),
    ("yahoo.co.uk", False),
    ("live.com", False),
    ("live.co.uk", False),
    ("outlook.com", False),
    ("icloud.com", False),
]


def seed(apps, schema_editor):
    AllowedEmailDomain = apps.get_model("accounts", "AllowedEmailDomain")
    for domain, include_subdomains in DOMAINS:
        AllowedEmailDomain.objects.get_or_create(domain=domain, defaults={"include_subdomains": include_subdomains})


def unseed(apps, schema_editor):
    apps.get_model("accounts", "AllowedEmailDomain").objects.filter(domain__in=[d for d, _ in DOMAINS]).delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
