"""keysteward's Azure Functions app: registers the blueprints of ``functions/``; nothing else."""

import azure.functions as func

from functions import key_events, keys_http, runbooks, schedules, ui, work_items

app = func.FunctionApp()
app.register_functions(key_events.bp)
app.register_functions(work_items.bp)
app.register_functions(schedules.bp)
app.register_functions(runbooks.bp)
app.register_functions(keys_http.bp)
app.register_functions(ui.bp)
