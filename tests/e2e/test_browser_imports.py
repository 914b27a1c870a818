"""The contact import in a real browser: a Mailchimp export goes in with its names, repeated
addresses are reported with their lines, and a large file's progress runs to the end in a
real worker."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MAILCHIMP = (
    '"Email Address","First Name","Last Name","Address","Phone Number",MEMBER_RATING,'
    "OPTIN_TIME,TAGS\n"
    '"ada@example.com","Ada","Lovelace","12 St James\'s Sq, London","+44 20 7946",2,'
    '"2024-01-02 10:00:00","vip"\n'
    '"grace@example.com","Grace","<b>Hopper</b>","","",1,"2024-01-03 10:00:00",""\n'
    '"user@☃.com","Snow","","","",1,"",""\n'
    '"ADA@example.com","Augusta","","","",1,"",""\n'
)


def _upload(page, live_server, path) -> None:
    page.goto(f"{live_server.url}/admin/campaigns/contact/")
    page.click("a.import_link")
    page.set_input_files("#id_file", str(path))
    page.click("input[type=submit]")
    page.wait_for_selector("#import-mapping")


def test_a_mailchimp_export_imports_with_its_names_and_repeats_reported(
    page, live_server, eager_celery, tmp_path
):
    from campaigns.models import Contact, ContactList

    export = tmp_path / "members_export.csv"
    export.write_text(MAILCHIMP, encoding="utf-8")
    _upload(page, live_server, export)

    assert "columns separated by commas" in page.inner_text(".import-file")
    assert page.input_value("#id_to_0") == "email"
    assert page.input_value("#id_to_1") == "first_name"
    assert page.input_value("#id_to_2") == "last_name"
    page.select_option("#id_to_5", "skip")  # MEMBER_RATING
    page.fill("#id_new_list_name", "From Mailchimp")
    page.check("input[name=existing][value=update]")
    page.click("input[value='Check the file']")

    page.wait_for_selector("#import-summary")
    assert page.inner_text(".import-new") == "2"
    assert page.inner_text(".import-errors") == "1"
    assert page.inner_text(".import-duplicates") == "1"
    errors = page.locator("#import-line-errors tbody tr").all_inner_texts()  # in plain view
    assert errors[0].startswith("4\tThe part after the @-sign is invalid")
    assert errors[1] == (
        "5\tLine 5 repeats the address of line 2: line 2 is imported, this line is not."
    )
    assert not Contact.objects.exists()

    page.click("input[value='Import 2 contacts']")
    page.wait_for_selector("h2:has-text('Imported')")
    ada = Contact.objects.get(email="ada@example.com")
    assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")
    assert "member_rating" not in ada.attributes and ada.attributes["tags"] == "vip"
    assert Contact.objects.get(email="grace@example.com").last_name == "<b>Hopper</b>"
    assert ContactList.objects.get(name="From Mailchimp").contacts.count() == 2


def test_a_large_import_shows_its_progress_to_the_end(
    page, live_server, celery_worker_process, tmp_path
):
    from campaigns.models import Contact, ImportJob

    rows = 30_000
    big = tmp_path / "big.csv"
    big.write_text("email;first_name\n" + "".join(f"p{i}@example.com;P{i}\n" for i in range(rows)))
    _upload(page, live_server, big)
    page.click("input[value='Check the file']")
    page.wait_for_selector("#import-summary", timeout=120_000)
    assert page.inner_text(".import-new") == str(rows)

    page.click(f"input[value='Import {rows} contacts']")
    page.wait_for_selector("#import-progress")  # the bar, while the worker writes
    page.wait_for_selector("h2:has-text('Imported')", timeout=120_000)
    assert page.inner_text(".import-new") == str(rows)
    assert Contact.objects.count() == rows
    assert ImportJob.objects.get().status == ImportJob.Status.DONE
