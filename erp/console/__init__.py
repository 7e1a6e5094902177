"""The operator console: server-rendered pages over the run ledger, for the web process.

A room of the task subsystem beside api/: it renders what erp.tasks.api's services return
(schedules, runs, alerts, previews, "why not") and changes schedules through the same service
functions as the API, under the same rules (erp.accounts). It never imports beat/ or worker/.
router.py: the pages; session.py: signing in and the forms' protection; views.py: what each
page reads; sparkline.py: the SVG of a schedule's last occurrences; templates/ and static/.
"""
