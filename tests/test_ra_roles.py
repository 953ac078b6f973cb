"""RA roles: what an RA Manager, an RA Agent and an Auditor can and cannot see and do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import messages
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.roles import AUDITOR, RA_AGENT, RA_MANAGER, ROLES
from audit.models import AuditEvent, Event

from .conftest import sign_in

USERS = "/admin/accounts/user/"
EVENTS = "/admin/audit/auditevent/"


def test_the_roles_have_exactly_their_permissions(db):
    for name, permissions in ROLES.items():
        group = Group.objects.get(name=name)
        have = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
        assert have == set(permissions), name


def test_the_admin_needs_a_cis2_sign_in_at_aal2(client, make_person, seeded_roles):
    staff = make_person(email="staff@nhs.net", is_staff=True, is_superuser=True)
    client.force_login(staff.user)  # a session that did not come through CIS2 Authentication
    response = client.get("/admin/")
    assert response.status_code == 302 and response.url.startswith("/admin/login/")


@pytest.fixture
def agent(ra_staff):
    return ra_staff(RA_AGENT)


@pytest.fixture
def manager(ra_staff):
    return ra_staff(RA_MANAGER)


def test_an_agent_sees_users_but_not_roles_or_permissions(agent, person):
    _, client = agent
    assert client.get(USERS).status_code == 200
    assert person.user.uid in client.get(USERS).content.decode()
    assert client.get("/admin/auth/group/").status_code == 403
    page = client.get(f"{USERS}{person.user.pk}/change/").content.decode()
    for field in ("is_staff", "is_superuser", "groups", "user_permissions", 'name="roles"'):
        assert field not in page


@pytest.mark.parametrize(
    "crafted",
    [{"is_staff": "on"}, {"is_superuser": "on"}, {"groups": "1"}, {"user_permissions": "1"}, {"status": "active"},
     {"roles": RA_MANAGER}, {"roles": RA_AGENT}, {"initial-roles": RA_MANAGER}],
)
def test_crafted_privilege_posts_are_refused_changed_nothing_and_audited(agent, person, crafted):
    agent_person, client = agent
    data = {"title": "", "first_name": "Edith", "last_name": "Changed", "email": person.user.email, **crafted}
    response = client.post(f"{USERS}{person.user.pk}/change/", data)
    assert response.status_code == 403
    person.user.refresh_from_db()
    assert person.user.last_name == "Cavell" and not person.user.is_staff and not person.user.is_superuser
    assert not person.user.groups.exists()
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=agent_person.user, subject=person.user).exists()


def test_an_agent_cannot_make_themselves_a_manager(agent):
    agent_person, client = agent
    response = client.post(f"{USERS}{agent_person.user.pk}/change/", {
        "first_name": "A", "last_name": "B", "email": agent_person.user.email, "roles": RA_MANAGER})
    assert response.status_code == 403
    assert set(agent_person.user.groups.values_list("name", flat=True)) == {RA_AGENT}
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=agent_person.user).exists()


def test_an_agent_cannot_change_an_ra_manager(agent, manager):
    agent_person, client = agent
    manager_person, _ = manager
    response = client.post(f"{USERS}{manager_person.user.pk}/change/", {
        "first_name": "Renamed", "last_name": "B", "email": manager_person.user.email})
    assert response.status_code == 403
    manager_person.user.refresh_from_db()
    assert manager_person.user.first_name == "Edith"
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=agent_person.user, subject=manager_person.user).exists()
    response = client.post(f"{USERS}{manager_person.user.pk}/suspend/", {"reason": "x"})
    assert response.status_code == 403
    manager_person.user.refresh_from_db()
    assert manager_person.user.status == User.Status.ACTIVE


def test_an_agent_changes_names_and_the_change_is_audited(agent, person):
    agent_person, client = agent
    response = client.post(f"{USERS}{person.user.pk}/change/", {
        "title": "Dr", "first_name": "Edith", "last_name": "Cavell-Smith", "email": person.user.email,
        "reason": "married, HR ticket 42"})
    assert response.status_code == 302
    person.user.refresh_from_db()
    assert (person.user.title, person.user.last_name) == ("Dr", "Cavell-Smith")
    event = AuditEvent.objects.get(event=Event.USER_CHANGED)
    assert event.actor == agent_person.user and event.subject == person.user
    assert event.details["before"] == {"title": "", "last_name": "Cavell"}
    assert event.details["reason"] == "married, HR ticket 42"


def test_a_manager_gives_and_takes_the_agent_role_only(manager, person):
    manager_person, client = manager
    base = {"first_name": "Edith", "last_name": "Cavell", "email": person.user.email, "reason": "new RA Agent"}
    assert client.post(f"{USERS}{person.user.pk}/change/", {**base, "roles": RA_AGENT}).status_code == 302
    person.user.refresh_from_db()
    assert person.user.is_staff and set(person.user.groups.values_list("name", flat=True)) == {RA_AGENT}
    assert AuditEvent.objects.get(event=Event.ROLES_CHANGED).details == {"added": [RA_AGENT], "removed": [],
                                                                          "reason": "new RA Agent"}
    assert client.post(f"{USERS}{person.user.pk}/change/", {**base, "roles": RA_MANAGER}).status_code == 403
    assert client.post(f"{USERS}{person.user.pk}/change/", base).status_code == 302
    person.user.refresh_from_db()
    assert not person.user.is_staff and not person.user.groups.exists()


def test_a_role_ticked_on_a_page_refused_for_its_reason_is_given_when_the_page_is_sent_again(manager, person):
    """The page the refusal shows carries what the first page showed (no role), not the role the RA ticked: sent
    again with a reason, the role is a change, and is given."""
    from .forms import form_fields

    _, client = manager
    page = f"{USERS}{person.user.pk}/change/"
    shown = form_fields(client.get(page).content.decode(), "user_form")
    refused = client.post(page, {**shown, "roles": [RA_AGENT], "_save": "Save"})
    assert refused.status_code == 200 and "Give a reason for the change" in refused.content.decode()
    again = form_fields(refused.content.decode(), "user_form")
    assert again["roles"] == RA_AGENT

    assert client.post(page, {**again, "reason": "new RA Agent", "_save": "Save"}).status_code == 302
    person.user.refresh_from_db()
    assert person.user.is_staff and set(person.user.groups.values_list("name", flat=True)) == {RA_AGENT}
    assert AuditEvent.objects.get(event=Event.ROLES_CHANGED).details["added"] == [RA_AGENT]


def test_a_role_unticked_on_the_page_is_taken_away(manager, person):
    from .forms import form_fields

    _, client = manager
    person.user.groups.add(Group.objects.get(name=RA_AGENT))
    page = f"{USERS}{person.user.pk}/change/"
    shown = form_fields(client.get(page).content.decode(), "user_form")
    assert shown["roles"] == RA_AGENT and shown["initial-roles"] == RA_AGENT
    shown.pop("roles")
    assert client.post(page, {**shown, "reason": "left the RA team", "_save": "Save"}).status_code == 302
    assert not person.user.groups.exists()
    assert AuditEvent.objects.get(event=Event.ROLES_CHANGED).details["removed"] == [RA_AGENT]


def test_an_auditor_reads_and_exports_the_trail_and_changes_nothing(ra_staff, person):
    auditor, client = ra_staff(AUDITOR)
    assert client.get(EVENTS).status_code == 200
    assert client.get(USERS).status_code == 403
    assert client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": "x"}).status_code == 403
    response = client.get(f"{EVENTS}export/")
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content).startswith(b"time,event,")
    assert AuditEvent.objects.filter(event=Event.AUDIT_EXPORTED, actor=auditor.user, outcome="success").exists()


def test_an_agent_reads_only_their_own_actions_and_cannot_export(agent, person):
    agent_person, client = agent
    sign_in(Client(), person)  # the person's own events: not this agent's to read
    client.post(f"{USERS}{person.user.pk}/unlock/", {"reason": "phoned in"})
    response = client.get(EVENTS)
    assert "Account unlocked" in response.content.decode()
    shown = list(response.context["cl"].result_list)
    assert shown and {event.actor_id for event in shown} == {agent_person.user.pk}
    assert AuditEvent.objects.filter(actor=person.user).exists()
    assert client.get(f"{EVENTS}export/").status_code == 403
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=agent_person.user).exists()


def test_nobody_deletes_a_care_identity(manager, person):
    _, client = manager
    assert client.post(f"{USERS}{person.user.pk}/delete/", {"post": "yes"}).status_code == 403
    assert User.objects.filter(pk=person.user.pk).exists()


def test_people_without_a_role_cannot_use_the_admin(client, person):
    sign_in(client, person)
    assert client.get("/admin/").status_code in (302, 403)


def test_staff_cannot_act_on_their_own_care_identity(agent):
    agent_person, client = agent
    for action in ("suspend", "close", "unlock", "link"):
        response = client.post(f"{USERS}{agent_person.user.pk}/{action}/", {"reason": "x", "kind": "authenticator-app",
                                                                           "purpose": "presence"})
        assert response.status_code == 403, action
    agent_person.user.refresh_from_db()
    assert agent_person.user.status == User.Status.ACTIVE


def test_signing_out_of_the_admin_is_careids_sign_out(agent):
    from allauth.usersessions.models import UserSession

    agent_person, client = agent
    assert "Change password" not in client.get("/admin/").content.decode()
    response = client.post("/admin/logout/")
    assert "You have signed out" in response.content.decode()
    assert AuditEvent.objects.filter(event=Event.SIGNED_OUT, subject=agent_person.user).exists()
    assert not UserSession.objects.filter(user=agent_person.user).exists()
    assert client.get("/admin/").status_code == 302


def test_no_list_can_be_filtered_on_undeclared_fields(agent, manager):
    manager_person, _ = manager
    _, client = agent
    prefix = manager_person.user.password[:8]
    for path in (f"{USERS}?password__startswith={prefix}&uid={manager_person.user.uid}",
                 f"{USERS}?is_superuser=1", f"{EVENTS}?details__contains=x", f"{EVENTS}?actor__password__startswith=a"):
        assert client.get(path).status_code == 400, path  # DisallowedModelAdminLookup


def test_an_agent_cannot_act_on_another_agent_or_an_auditor(ra_staff, agent, person):
    _, client = agent
    peer, _ = ra_staff(RA_AGENT, email="peer.agent@nhs.net")
    auditor, _ = ra_staff(AUDITOR)
    for target in (peer, auditor):
        assert client.post(f"{USERS}{target.user.pk}/authenticators/authenticator-app/remove/", {"reason": "x"}).status_code == 403
        assert client.post(f"{USERS}{target.user.pk}/change/", {"first_name": "A", "last_name": "B",
                                                                "email": "evil@nhs.net"}).status_code == 403
        target.user.refresh_from_db()
        assert target.user.email != "evil@nhs.net"
        page = client.get(f"{USERS}{target.user.pk}/change/").content.decode()
        assert "The audit trail of RA staff is for Auditors and RA Managers to read." in page
    # Ordinary people's trails are there to answer "who signed in, when, with what".
    assert "Last 50 audit events" in client.get(f"{USERS}{person.user.pk}/change/").content.decode()


def test_an_agent_does_not_see_where_other_ra_staff_are_signed_in(ra_staff, agent, person):
    """Sessions (IP address, browser), e-mails and services of RA staff are theirs and the Auditors' to read."""
    from django.test import Client

    from .conftest import sign_in

    _, client = agent
    peer, _ = ra_staff(RA_AGENT, email="peer.agent@nhs.net")
    sign_in(Client(HTTP_USER_AGENT="Mozilla/5.0 peer's ward PC"), peer)
    page = client.get(f"{USERS}{peer.user.pk}/change/").content.decode()
    assert "peer's ward PC" not in page and "Where this person is signed in" not in page
    assert "E-mails to this person" not in page and "Services signed into" not in page
    sign_in(Client(HTTP_USER_AGENT="Mozilla/5.0 the person's ward PC"), person)
    page = client.get(f"{USERS}{person.user.pk}/change/").content.decode()
    assert "the person&#x27;s ward PC" in page and "E-mails to this person" in page


def test_a_manager_acts_on_agents_but_not_on_auditors(ra_staff, manager):
    _, client = manager
    agent_person, _ = ra_staff(RA_AGENT, email="an.agent@nhs.net")
    auditor, _ = ra_staff(AUDITOR)
    assert client.post(f"{USERS}{agent_person.user.pk}/unlock/", {"reason": "asked"}).status_code in (302, 400)
    assert client.post(f"{USERS}{auditor.user.pk}/suspend/", {"reason": "x"}).status_code == 403


@pytest.fixture
def platform_operator(make_person, seeded_roles):
    """Staff who register relying services (oidc/admin.py) and hold no RA role."""
    operator = make_person(email="platform.operator@nhs.net", is_staff=True)
    operator.user.user_permissions.add(Permission.objects.get(codename="manage_relyingservice"))
    return operator


def test_a_manager_cannot_change_the_email_of_staff_holding_a_permission_they_lack(manager, platform_operator):
    """Re-pointing the e-mail, then a registration link, would hand the manager an account that registers
    relying services (and their redirect URIs)."""
    manager_person, client = manager
    operator = platform_operator.user
    assert not manager_person.user.has_perm("oidc.manage_relyingservice")
    response = client.post(f"{USERS}{operator.pk}/change/", {
        "title": "", "first_name": "Edith", "last_name": "Cavell", "email": "attacker.mailbox@nhs.net",
        "reason": "asked by phone"})
    assert response.status_code == 403
    operator.refresh_from_db()
    assert operator.email == "platform.operator@nhs.net"
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=manager_person.user, subject=operator).exists()


def test_a_manager_cannot_issue_a_link_to_staff_holding_a_permission_they_lack(manager, platform_operator):
    from authenticators.models import RegistrationLink

    manager_person, client = manager
    operator = platform_operator.user
    page = client.get(f"{USERS}{operator.pk}/change/").content.decode()
    assert "Issue a registration link" not in page and "Suspend" not in page
    response = client.post(f"{USERS}{operator.pk}/link/", {"kind": "security-key", "purpose": "presence",
                                                           "reason": "asked by phone"})
    assert response.status_code == 403
    assert not RegistrationLink.objects.filter(user=operator).exists()
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=manager_person.user, subject=operator).exists()


def test_a_permission_held_through_a_group_protects_too_even_while_suspended(manager, make_person):
    manager_person, client = manager
    operators = Group.objects.create(name="Platform operators")
    operators.permissions.add(Permission.objects.get(codename="manage_relyingservice"))
    operator = make_person(email="platform.operator@nhs.net", is_staff=True).user
    operator.groups.add(operators)
    User.objects.filter(pk=operator.pk).update(status=User.Status.SUSPENDED)
    assert client.post(f"{USERS}{operator.pk}/reinstate/", {"reason": "back from leave"}).status_code == 403
    operator.refresh_from_db()
    assert operator.status == User.Status.SUSPENDED


def test_a_superuser_cannot_act_on_their_own_care_identity(make_person, seeded_roles):
    operator = make_person(email="operator@nhs.net", is_staff=True, is_superuser=True)
    client = Client()
    assert sign_in(client, operator, goto="/admin/").url == "/admin/"
    response = client.post(f"{USERS}{operator.user.pk}/link/", {"kind": "security-key", "purpose": "presence",
                                                                "reason": "my own key"})
    assert response.status_code == 403
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=operator.user, subject=operator.user).exists()


def test_bulk_actions_skip_and_audit_protected_accounts(agent, manager, person):
    agent_person, client = agent
    manager_person, _ = manager
    ids = [str(person.user.pk), str(manager_person.user.pk)]
    client.post(USERS, {"action": "suspend_selected", "_selected_action": ids, "apply": "1", "reason": "test"})
    person.user.refresh_from_db()
    manager_person.user.refresh_from_db()
    assert person.user.status == User.Status.SUSPENDED and manager_person.user.status == User.Status.ACTIVE
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=agent_person.user, subject=manager_person.user).exists()


def test_a_bulk_action_that_skips_someone_says_who_and_why(agent, make_person):
    """Not only "Suspend: done for 1 Care Identity.": the RA selected the colleague too and is told they were left."""
    _, client = agent
    clinician = make_person(email="mary.seacole@nhs.net")
    colleague = make_person(email="ra.colleague@nhs.net", is_staff=True)
    response = client.post(USERS, {"action": "suspend_selected", "apply": "1", "reason": "Left the trust",
                                   "_selected_action": [clinician.user.pk, colleague.user.pk]}, follow=True)
    colleague.user.refresh_from_db()
    assert colleague.user.status == User.Status.ACTIVE
    shown = [(message.level, str(message)) for message in response.context["messages"]]
    assert shown == [
        (messages.INFO, "Suspend: done for 1 Care Identity."),
        (messages.WARNING, "Suspend: 1 Care Identity left as it was (you may not act on your own Care Identity or on "
                           f"staff your role does not manage): {colleague.user}."),
    ]


def test_a_managers_bulk_actions_skip_and_audit_staff_holding_a_permission_they_lack(manager, ra_staff,
                                                                                     platform_operator):
    manager_person, client = manager
    agent_person, _ = ra_staff(RA_AGENT)
    operator = platform_operator.user
    ids = [str(agent_person.user.pk), str(operator.pk)]
    client.post(USERS, {"action": "suspend_selected", "_selected_action": ids, "apply": "1", "reason": "test"})
    agent_person.user.refresh_from_db()
    operator.refresh_from_db()
    assert agent_person.user.status == User.Status.SUSPENDED and operator.status == User.Status.ACTIVE
    assert AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=manager_person.user, subject=operator).exists()


def test_no_link_for_a_suspended_or_closed_profile(agent, make_person):
    from authenticators.models import AuthenticatorApp, RegistrationLink

    _, client = agent
    person = make_person(email="closed.person@nhs.net")
    AuthenticatorApp.objects.filter(user=person.user).delete()
    for status in (User.Status.SUSPENDED, User.Status.CLOSED):
        User.objects.filter(pk=person.user.pk).update(status=status)
        response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "emailed"})
        assert response.status_code == 403
    assert not RegistrationLink.objects.exists()


def test_suspension_revokes_unused_links(agent, make_person):
    from authenticators.flows import issue_registration_link
    from authenticators.models import AuthenticatorApp, RegistrationLink

    _, client = agent
    person = make_person(email="leaver@nhs.net")
    AuthenticatorApp.objects.filter(user=person.user).delete()
    link = issue_registration_link(user=person.user, kind="authenticator-app", purpose=RegistrationLink.Purpose.EMAILED)
    ran_out = issue_registration_link(user=person.user, kind="authenticator-app",
                                      purpose=RegistrationLink.Purpose.EMAILED)
    RegistrationLink.objects.filter(pk=ran_out.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": "left"})
    link.refresh_from_db()
    ran_out.refresh_from_db()
    assert link.is_expired and link.is_revoked
    assert ran_out.is_expired and not ran_out.is_revoked  # it had expired on its own


def test_allow_list_changes_are_audited(manager):
    manager_person, client = manager
    client.post("/admin/accounts/allowedemaildomain/add/", {"domain": "example.org", "reason": "new trust"})
    event = AuditEvent.objects.get(event=Event.ALLOW_LIST_CHANGED)
    assert event.actor == manager_person.user and event.details["domain"] == "example.org"
    assert event.details["reason"] == "new trust"


def test_there_is_no_session_admin_not_even_for_a_superuser(make_person, seeded_roles):
    # allauth's UserSession admin searched a username this User does not have (500 on ?q=), showed
    # session keys and let rows be edited or deleted without ending the session or an audit event.
    operator = make_person(email="operator@nhs.net", is_staff=True, is_superuser=True)
    client = Client()
    assert sign_in(client, operator, goto="/admin/").url == "/admin/"
    assert client.get("/admin/usersessions/usersession/?q=abc").status_code == 404
    assert client.get(f"/admin/usersessions/usersession/?q={operator.user.uid}").status_code == 404
    assert "/admin/usersessions/" not in client.get("/admin/").content.decode()
