// The theme (System, Light or Dark) and the desktop sidebar's state, as chosen on this device
// (localStorage), applied before the page is first painted: a classic script, loaded at the end
// of <head> (after every stylesheet), so it blocks the first paint (no flash of the other theme).
// The strict CSP allows no inline script, hence this file.
//
// data-theme on <html> ("light" or "dark"; absent: follow the system) switches the colours of
// base.css; each stylesheet with data-scheme="light|dark" (highlight.js's) is turned on or off.
// shortcuts.js sets a new choice through window.autoglmTheme.
(function () {
  "use strict";
  var root = document.documentElement;
  var THEME = "autoglm.theme";
  var SIDEBAR = "autoglm.sidebar";

  function read(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (error) {
      return null; // storage refused (private mode, a policy): the defaults
    }
  }

  function write(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (error) {
      // not kept across pages, but applied to this one
    }
  }

  function choice() {
    var stored = read(THEME);
    return stored === "light" || stored === "dark" ? stored : "system";
  }

  function apply(theme) {
    if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
    else root.removeAttribute("data-theme");
    var sheets = document.querySelectorAll("link[data-scheme]");
    for (var i = 0; i < sheets.length; i++) {
      var scheme = sheets[i].getAttribute("data-scheme");
      sheets[i].media =
        theme === "system" ? "(prefers-color-scheme: " + scheme + ")" : scheme === theme ? "all" : "not all";
    }
  }

  function dark() {
    var theme = choice();
    if (theme !== "system") return theme === "dark";
    return window.matchMedia("(prefers-color-scheme: dark)").matches;
  }

  function setSidebar(collapsed) {
    if (collapsed) root.setAttribute("data-sidebar", "collapsed");
    else root.removeAttribute("data-sidebar");
    write(SIDEBAR, collapsed ? "collapsed" : null);
  }

  window.autoglmTheme = {
    choice: choice,
    dark: dark,
    set: function (theme) {
      write(THEME, theme === "light" || theme === "dark" ? theme : null);
      apply(choice());
      document.dispatchEvent(new CustomEvent("theme:changed", { detail: { theme: choice() } }));
    },
    setSidebar: setSidebar,
  };

  apply(choice());
  if (read(SIDEBAR) === "collapsed") root.setAttribute("data-sidebar", "collapsed");
  // Another tab changed it: follow.
  window.addEventListener("storage", function (event) {
    if (event.key === THEME) {
      apply(choice());
      document.dispatchEvent(new CustomEvent("theme:changed", { detail: { theme: choice() } }));
    }
  });
})();
