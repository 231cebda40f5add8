const ReviewCommon = (() => {
  "use strict";
  const REVIEWER_PATTERN = /^[A-Za-z0-9_-]{1,40}$/;
  const $ = (id) => document.getElementById(id);

  /** The start view: asks the reviewer id, says what `store` (OfflinePage.progressStore) holds for
   * it, then calls start(reviewer, saved). */
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
    $("reviewer-id").value = store.last();
    $("reviewer-id").addEventListener("input", describeSaved);
    describeSaved();
    $("reviewer-id").focus();
  }

  /** Keys typed into a field belong to the field, not to the page's shortcuts. */
  function ownsKeys(event) {
    const target = event.target;
    return event.ctrlKey || event.metaKey || event.altKey
      || (target instanceof HTMLInputElement && target.type !== "radio") || target instanceof HTMLSelectElement
      || target instanceof HTMLTextAreaElement || document.querySelector("dialog[open]") !== null;
  }

  return { bindStart, ownsKeys };
})();
