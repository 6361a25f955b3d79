<?php
/**
 * Boots a real WordPress from the command line against a database chosen by the caller.
 *
 * Used by the test harness (tests/php_wp.py) and by interop checks: it plays the role of
 * wp-config.php without touching the distribution's own (Debian's wp-config.php is a host-based
 * loader). Settings come from a JSON file named by the KCSC_WP_LOADER_CONFIG environment
 * variable, so secrets never appear on a command line:
 *
 *   {"db_name", "db_user", "db_password", "db_host", "table_prefix", "site_url",
 *    "abspath", "content_dir", "constants": {"LOGGED_IN_KEY": "...", ...}, "installing": bool}
 *
 * Only the constants present in "constants" are defined, so callers can leave keys undefined to
 * exercise wp_salt()'s fallback to the *_key / *_salt site options. Mail is suppressed by
 * defining the pluggable wp_mail() before WordPress does.
 */

$kcsc_config_path = getenv( 'KCSC_WP_LOADER_CONFIG' );
if ( ! $kcsc_config_path || ! is_readable( $kcsc_config_path ) ) {
	fwrite( STDERR, "wp-loader: KCSC_WP_LOADER_CONFIG must name a readable JSON file\n" );
	exit( 2 );
}
$kcsc_config = json_decode( file_get_contents( $kcsc_config_path ), true );
if ( ! is_array( $kcsc_config ) ) {
	fwrite( STDERR, "wp-loader: configuration is not a JSON object\n" );
	exit( 2 );
}

define( 'DB_NAME', $kcsc_config['db_name'] );
define( 'DB_USER', $kcsc_config['db_user'] );
define( 'DB_PASSWORD', $kcsc_config['db_password'] );
define( 'DB_HOST', $kcsc_config['db_host'] );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
foreach ( $kcsc_config['constants'] as $kcsc_name => $kcsc_value ) {
	define( $kcsc_name, $kcsc_value );
}
$table_prefix = $kcsc_config['table_prefix'];

if ( ! empty( $kcsc_config['content_dir'] ) ) {
	define( 'WP_CONTENT_DIR', $kcsc_config['content_dir'] );
}
define( 'WP_DEBUG', false );
define( 'DISABLE_WP_CRON', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
if ( ! empty( $kcsc_config['installing'] ) ) {
	define( 'WP_INSTALLING', true );
}

// A CLI process has no request; give WordPress the one a browser would send to the site.
$kcsc_url                   = parse_url( $kcsc_config['site_url'] );
$_SERVER['HTTP_HOST']       = $kcsc_url['host'] . ( isset( $kcsc_url['port'] ) ? ':' . $kcsc_url['port'] : '' );
$_SERVER['SERVER_NAME']     = $kcsc_url['host'];
$_SERVER['REQUEST_URI']     = ( isset( $kcsc_url['path'] ) ? rtrim( $kcsc_url['path'], '/' ) : '' ) . '/';
$_SERVER['SCRIPT_NAME']     = $_SERVER['REQUEST_URI'] . 'index.php';
$_SERVER['PHP_SELF']        = $_SERVER['SCRIPT_NAME'];
$_SERVER['REQUEST_METHOD']  = 'GET';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
$_SERVER['REMOTE_ADDR']     = '127.0.0.1';
if ( isset( $kcsc_url['scheme'] ) && 'https' === $kcsc_url['scheme'] ) {
	$_SERVER['HTTPS'] = 'on';
}

// Pluggable: defined first, so WordPress keeps ours. No mail leaves a test.
function wp_mail( $to, $subject, $message, $headers = '', $attachments = array() ) {
	return true;
}

define( 'ABSPATH', rtrim( $kcsc_config['abspath'], '/' ) . '/' );
require_once ABSPATH . 'wp-settings.php';
