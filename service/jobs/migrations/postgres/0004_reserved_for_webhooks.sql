-- A placeholder: migration 0004 belongs to the webhooks branch. Merging that branch
-- replaces this file with its own 0004 (delete this one then); it changes nothing.
SELECT 1;
