const ReviewCommon = (() => {
  "use strict";
  const REVIEWER_PATTERN = /^[A-Za-z0-9_-]{1,40}$/;
  const $ = (id) => document.getElementById(id);

  /** A reviewer's saved progress in localStorage, under the page's content id and the reviewer id. */
  function progressStore(kind, contentId) {
    const prefix = "radsynth-review:" + kind + ":" + contentId + ":";
    let storage = null;
    try {
      localStorage.setItem(prefix + "probe", "1");
      localStorage.removeItem(prefix + "probe");
      storage = localStorage;
    } catch (error) {
      storage = null;  // file:// pages may be denied storage: the review then lasts one sitting
    }
    return {
      available: storage !== null,
      load(reviewer) {
        const saved = storage && storage.getItem(prefix + "reviewer:" + reviewer);
        return saved ? JSON.parse(saved) : null;
      },
      save(state) {
        if (!storage) return;
        storage.setItem(prefix + "reviewer:" + state.reviewer, JSON.stringify(state));
        storage.setItem(prefix + "last-reviewer", state.reviewer);
      },
      lastReviewer() {
        return (storage && storage.getItem(prefix + "last-reviewer")) || "";
      },
    };
  }

  /** The start view: asks the reviewer id, says what is saved for it, then calls start(reviewer). */
  function bindStart(store, describe, start) {
    const savedFor = (reviewer) => (REVIEWER_PATTERN.test(reviewer) ? store.load(reviewer) : null);
    const describeSaved = () => {
      const reviewer = $("reviewer-id").value.trim();
      const saved = savedFor(reviewer);
      $("resume-note").hidden = !saved;
      if (saved) {
        $("resume-note").textContent = "Saved progress found for " + reviewer + ": " + describe(saved)
          + ". Start resumes where you left off.";
      }
    };
    $("start-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const reviewer = $("reviewer-id").value.trim();
      if (!REVIEWER_PATTERN.test(reviewer)) {
        $("reviewer-error").textContent = "Enter a reviewer ID of letters, digits, \"-\" or \"_\".";
        $("reviewer-id").focus();
        return;
      }
      $("reviewer-error").textContent = "";
      $("reviewer-name").textContent = reviewer;
      $("reviewer-chip").hidden = false;
      $("export-button").hidden = false;
      $("start-view").hidden = true;
      start(reviewer, savedFor(reviewer));
    });
    $("storage-warning").hidden = store.available;
    $("start-button").disabled = false;  // a large page parses for seconds before its script runs
    $("start-button").textContent = "Start";
    $("reviewer-id").value = store.lastReviewer();
    $("reviewer-id").addEventListener("input", describeSaved);
    describeSaved();
    $("reviewer-id").focus();
  }

  /** One CSV record, quoted as Python's csv module would read it back. */
  function csvLine(fields) {
    return fields.map((value) => {
      const text = String(value);
      return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
    }).join(",");
  }

  /** Save `text` as a file through the browser's download: nothing leaves the machine. */
  function download(name, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  /** Keys typed into a field belong to the field, not to the page's shortcuts. */
  function ownsKeys(event) {
    const target = event.target;
    return event.ctrlKey || event.metaKey || event.altKey
      || (target instanceof HTMLInputElement && target.type !== "radio") || target instanceof HTMLSelectElement
      || target instanceof HTMLTextAreaElement || document.querySelector("dialog[open]") !== null;
  }

  return { progressStore, bindStart, csvLine, download, ownsKeys };
})();
