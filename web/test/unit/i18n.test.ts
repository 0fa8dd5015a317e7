// Every string key exists in every language, with the same {placeholders}.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LANGUAGES, setLanguage, t } from "../../src/ui/i18n";

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test("every key exists in every language with the same placeholders", () => {
  const langs = Object.keys(LANGUAGES);
  assert.ok(langs.includes("en") && langs.includes("de"));
  const keys = Object.keys(LANGUAGES.en!).sort();
  for (const l of langs) {
    const d = LANGUAGES[l]!;
    assert.deepEqual(Object.keys(d).sort(), keys, `keys of ${l}`);
    for (const k of keys) {
      const v = (d as Record<string, string>)[k]!;
      assert.ok(v.trim().length > 0, `${l}.${k} is empty`);
      assert.deepEqual(placeholders(v), placeholders((LANGUAGES.en as Record<string, string>)[k]!), `${l}.${k} placeholders`);
    }
  }
});

test("language follows the preference, then the browser, then English", () => {
  setLanguage(undefined, ["de-AT", "en"]);
  assert.equal(t("join"), "Beitreten");
  setLanguage("en", ["de-DE"]);
  assert.equal(t("join"), "Join");
  setLanguage(undefined, ["fr-FR"]);
  assert.equal(t("members_count", { n: 3 }), "3 present");
});

test("every preference shown in the settings panel has a description in every language", async () => {
  const { PREFS } = await import("../../src/protocol/prefs");
  for (const [k, d] of Object.entries(PREFS)) {
    if ((d as { internal?: boolean }).internal) continue;
    for (const l of Object.keys(LANGUAGES)) assert.ok(`pref_${k}` in LANGUAGES[l]!, `${l}: pref_${k}`);
  }
});
