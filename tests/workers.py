"""Many clients at once on the service layer, as busy browser tabs would be."""

import threading
import time


def hammer(services, seconds, threads=8):
    """`threads` clients per service calling refresh() as fast as a busy browser would."""
    stop = time.time() + seconds

    def client(svc):
        while time.time() < stop:
            svc.refresh()
            time.sleep(0.01)

    workers = [threading.Thread(target=client, args=(svc,)) for svc in services for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
