// Entry point of the page: tabs, language lists, and the two modes.

import { apiKey } from "./api-key.js";
import { FileMode } from "./file-mode.js";
import { fillLanguageSelects } from "./languages.js";
import { LiveMode } from "./live.js";
import { setUpTabs } from "./tabs.js";

fillLanguageSelects();
setUpTabs(document.querySelector('[role="tablist"]'));
new LiveMode(document);
new FileMode(document);
apiKey.check();
