from account_worker.main import run

run()
