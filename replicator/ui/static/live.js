// The geo status page's only script. The page works without it: it asks
// before the actions that touch every row, and refreshes the live part of
// the page (#live) every data-refresh milliseconds by fetching the page
// again, keeping open what the operator opened.
(() => {
  'use strict';
  document.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-confirm]');
    if (b && !window.confirm(b.dataset.confirm)) {
      e.preventDefault();
    }
  });
  const live = document.getElementById('live');
  const every = live ? Number(live.dataset.refresh) : 0;
  if (!every) {
    return;
  }
  // Never pull a field or a button from under the operator's fingers: no
  // refresh while a field has the focus, a pointer is down, or within a
  // second of a click (a swap between press and release loses the click).
  let holding = false;
  let lastInput = 0;
  document.addEventListener('pointerdown', () => { holding = true; }, true);
  for (const type of ['pointerup', 'pointercancel', 'keydown']) {
    document.addEventListener(type, () => { holding = false; lastInput = Date.now(); }, true);
  }
  const interacting = () => {
    const active = document.activeElement;
    return holding || Date.now() - lastInput < 1000 ||
      (active && live.contains(active) && active.matches('input, select, textarea'));
  };
  let busy = false;
  async function refresh() {
    if (busy || document.hidden || interacting()) {
      return;
    }
    busy = true;
    try {
      // A request that hangs must not stop the refreshes for good.
      const res = await fetch(location.href, {
        credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' },
        signal: AbortSignal.timeout(Math.max(4 * every, 15000)),
      });
      if (!res.ok && res.status !== 503) {
        return;
      }
      const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
      const next = doc.getElementById('live');
      if (!next || interacting()) {
        return;
      }
      const open = Array.from(live.querySelectorAll('details[open][id]'), (d) => d.id);
      live.replaceChildren(...next.childNodes);
      for (const id of open) {
        const d = document.getElementById(id);
        if (d) {
          d.open = true;
        }
      }
      live.dataset.refreshed = String(Date.now());
    } catch (e) {
      // The server is unreachable: try again at the next tick.
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
})();
