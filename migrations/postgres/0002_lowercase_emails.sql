-- Email addresses are compared in one canonical form from now on
-- (trimmed, lowercased, the domain as punycode), and new rows are stored
-- in it, so that users_email_key refuses a second account for a case
-- variant of an address. This brings the rows written before into that
-- form as far as SQL can: it lowercases them.
--
-- Case variants already stored as two accounts (Ada@… and ada@…) cannot
-- all be lowercased without violating users_email_key, and deleting an
-- account is not a migration's decision. Of each such set, the row
-- already in lowercase, or else the oldest, takes the lowercase spelling,
-- so a new account cannot take the address again; the others keep their
-- spelling and stay readable and writable. To list what is left to merge:
--   SELECT lower(email), count(*) FROM users GROUP BY 1 HAVING count(*) > 1;
-- Domains stored in Unicode (ada@bücher.de) keep that spelling: SQL cannot
-- convert them to punycode.
UPDATE users SET email = lower(email)
WHERE email <> lower(email)
  AND id IN (
    SELECT id FROM (
      SELECT id, row_number() OVER (
        PARTITION BY lower(email)
        ORDER BY (email = lower(email)) DESC, created_at, id
      ) AS rank
      FROM users
    ) AS ranked
    WHERE rank = 1
  );
