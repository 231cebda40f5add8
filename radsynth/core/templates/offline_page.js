const OfflinePage = (() => {
  "use strict";

  /** Saved progress in localStorage: one entry per person (`role`: "rater", "reviewer") under
   * `prefix` (the page's kind and content id), and who worked here last. */
  function progressStore(prefix, role) {
    let storage = null;
    try {
      localStorage.setItem(prefix + "probe", "1");
      localStorage.removeItem(prefix + "probe");
      storage = localStorage;
    } catch (error) {
      storage = null;  // file:// pages may be denied storage: the work then lasts one sitting
    }
    return {
      available: storage !== null,
      load(person) {
        const saved = storage && storage.getItem(prefix + role + ":" + person);
        return saved ? JSON.parse(saved) : null;
      },
      save(person, state) {
        if (!storage) return;
        storage.setItem(prefix + role + ":" + person, JSON.stringify(state));
        storage.setItem(prefix + "last-" + role, person);
      },
      last() {
        return (storage && storage.getItem(prefix + "last-" + role)) || "";
      },
    };
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

  return { progressStore, csvLine, download };
})();
