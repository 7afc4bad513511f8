// Entry point of the page: tabs, language lists, and the two modes.

import { apiKey } from "./api-key.js";
import { FileMode } from "./file-mode.js";
import { fillLanguageSelects } from "./languages.js";
import { LiveMode } from "./live.js";
import { PushToTalk } from "./push-to-talk.js";
import { setUpTabs } from "./tabs.js";

fillLanguageSelects();
setUpTabs(document.querySelector('[role="tablist"]'));
new PushToTalk(document, new LiveMode(document));
new FileMode(document);
apiKey.check();
