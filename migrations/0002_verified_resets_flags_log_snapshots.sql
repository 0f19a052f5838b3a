CREATE TABLE `vm_log_snapshots` (
	`vm_id` text PRIMARY KEY NOT NULL,
	`captured_at` integer NOT NULL,
	`log_path` text NOT NULL,
	`log_size_bytes` integer NOT NULL,
	`lines_returned` integer NOT NULL,
	`truncated` integer NOT NULL,
	`last_modified` text,
	`files` text NOT NULL,
	`text` text NOT NULL,
	FOREIGN KEY (`vm_id`) REFERENCES `vms`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
ALTER TABLE `vm_events` ADD `expected_state` text;--> statement-breakpoint
ALTER TABLE `vm_events` ADD `observed_state` text;--> statement-breakpoint
ALTER TABLE `vm_events` ADD `log_excerpt` text;--> statement-breakpoint
ALTER TABLE `vms` ADD `forced_reset_at` integer;--> statement-breakpoint
ALTER TABLE `vms` ADD `flag_code` text;--> statement-breakpoint
ALTER TABLE `vms` ADD `flag_message` text;--> statement-breakpoint
ALTER TABLE `vms` ADD `flag_at` integer;