// Runs SQL queries in an in-memory DuckDB and prints their rows as JSON, for the frame
// differential test (tests/e2e/test_frames.py). Usage: node duckdb_answers.mjs QUERIES.json
// where the file maps a name to a SQL text; prints {name: [row objects]} on stdout. Values
// are as DuckDB's JSON conversion gives them: cast in SQL to DOUBLE for numbers.
import { readFileSync } from 'node:fs';
import { DuckDBInstance } from '@duckdb/node-api';

const queries = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const instance = await DuckDBInstance.create(':memory:');
const connection = await instance.connect();
const answers = {};
for (const [name, sql] of Object.entries(queries)) {
  const reader = await connection.runAndReadAll(sql);
  answers[name] = reader.getRowObjectsJson();
}
connection.closeSync();
process.stdout.write(JSON.stringify(answers));
