ALTER TABLE `nodes` ADD `flag_code` text;--> statement-breakpoint
ALTER TABLE `nodes` ADD `flag_message` text;--> statement-breakpoint
ALTER TABLE `nodes` ADD `flag_at` integer;--> statement-breakpoint
ALTER TABLE `vms` ADD `claimant_node_id` text;