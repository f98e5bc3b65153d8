// A job from a CSV file: store_id,image_url,visit_time, one image per row.

const COLUMNS = ["store_id", "image_url", "visit_time"];

/** RFC 4180 rows: quoted cells may hold commas, quotes ("") and line breaks. */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // a byte-order mark from a spreadsheet
  for (; i < text.length; i++) {
    const char = text[i];
    if (quoted) {
      if (char === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        cell += char;
      }
    } else if (char === '"' && cell === "") {
      quoted = true;
    } else if (char === ",") {
      row.push(cell);
      cell = "";
    } else if (char === "\n" || char === "\r") {
      if (char === "\r" && text[i + 1] === "\n") i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else {
      cell += char;
    }
  }
  if (quoted) throw new Error("a quoted cell is never closed");
  if (cell !== "" || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

/** Visits from parsed rows (a header first): rows of one store and visit time make one visit. */
export function visitsFromRows(rows) {
  const header = (rows[0] || []).map((name) => name.trim().toLowerCase());
  const positions = COLUMNS.map((name) => header.indexOf(name));
  const missing = COLUMNS.filter((_, n) => positions[n] < 0);
  if (missing.length) {
    const wanted = COLUMNS.join(", ");
    throw new Error(`the first row must name the columns ${wanted} (missing: ${missing.join(", ")})`);
  }
  const visits = new Map();
  for (let n = 1; n < rows.length; n++) {
    const row = rows[n];
    if (row.every((cell) => cell.trim() === "")) continue; // a blank line
    const [store, url, time] = positions.map((position) => (row[position] ?? "").trim());
    if (!store || !url || !time) {
      throw new Error(`row ${n + 1} needs a store_id, an image_url and a visit_time`);
    }
    const key = JSON.stringify([store, time]);
    if (!visits.has(key)) visits.set(key, { store_id: store, image_url: [], visit_time: time });
    visits.get(key).image_url.push(url);
  }
  if (!visits.size) throw new Error("no rows after the header");
  return [...visits.values()];
}
