// Progressive enhancement for the Keyward console. Every page works
// without this file; it adds copy buttons, opens the one-time secret
// dialog modally, and asks before irreversible actions.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.value !== undefined && source.tagName !== "OUTPUT" ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text.trim());
    button.textContent = "Copied";
  } catch {
    // Clipboard access can be refused (plain HTTP, permissions): select
    // the text so the person can copy it themselves.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Press Ctrl+C";
  }
});

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// The secret dialog is open without JavaScript (an `open` attribute);
// with it, reopen it modally so the rest of the page waits.
window.addEventListener("DOMContentLoaded", () => {
  for (const dialog of document.querySelectorAll("dialog[open][data-modal]")) {
    dialog.close();
    dialog.showModal();
  }
  // Jobs in progress: refresh until they finish.
  const refresh = document.querySelector("[data-refresh]");
  if (refresh) setTimeout(() => window.location.reload(), Number(refresh.dataset.refresh) * 1000);
});
