CREATE TABLE `liveness_seen` (
	`shard` text PRIMARY KEY NOT NULL,
	`seen` text DEFAULT '{}' NOT NULL,
	`at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `nodes` ADD `liveness_shard` text;