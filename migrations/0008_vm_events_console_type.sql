ALTER TABLE `vm_events` ADD `console_type` text;--> statement-breakpoint
-- Graphical consoles' console.opened rows kept "vnc" in reason until now; serial ones kept none.
UPDATE `vm_events` SET `console_type` = CASE WHEN `reason` = 'vnc' THEN 'vnc' ELSE 'serial' END, `reason` = CASE WHEN `reason` = 'vnc' THEN NULL ELSE `reason` END WHERE `action` = 'console.opened';
