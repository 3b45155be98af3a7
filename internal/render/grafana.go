package render

// The Grafana dashboard JSON model, as much of it as workerscale writes. Grafana's own
// dashboards-as-code modules cannot be fetched here, so the model is typed here and the
// output is checked by tests (ids, layout, datasource, thresholds) and by running every
// query against a real Prometheus.

// SchemaVersion is the dashboard schema written.
const SchemaVersion = 39

// Dashboard is a Grafana dashboard.
type Dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	Description   string      `json:"description,omitempty"`
	Tags          []string    `json:"tags"`
	Timezone      string      `json:"timezone"`
	SchemaVersion int         `json:"schemaVersion"`
	Version       int         `json:"version"`
	Editable      bool        `json:"editable"`
	GraphTooltip  int         `json:"graphTooltip"`
	Refresh       string      `json:"refresh"`
	Time          TimeRange   `json:"time"`
	Templating    Templating  `json:"templating"`
	Annotations   Annotations `json:"annotations"`
	Panels        []Panel     `json:"panels"`
	Links         []Link      `json:"links"`
}

// TimeRange is the default time range.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Link is a link to another dashboard by tag.
type Link struct {
	Title       string   `json:"title"`
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	AsDropdown  bool     `json:"asDropdown"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
	Icon        string   `json:"icon"`
	Tooltip     string   `json:"tooltip"`
	TargetBlank bool     `json:"targetBlank"`
}

// Templating holds the variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a dashboard variable.
type Variable struct {
	Name       string         `json:"name"`
	Label      string         `json:"label,omitempty"`
	Type       string         `json:"type"`
	Query      string         `json:"query"`
	Datasource *DatasourceRef `json:"datasource,omitempty"`
	Current    Option         `json:"current"`
	Options    []Option       `json:"options"`
	Multi      bool           `json:"multi"`
	IncludeAll bool           `json:"includeAll"`
	Hide       int            `json:"hide"`
	Refresh    int            `json:"refresh,omitempty"`
	Definition string         `json:"definition,omitempty"`
	Sort       int            `json:"sort,omitempty"`
	AllValue   string         `json:"allValue,omitempty"`
}

// Option is a variable's value.
type Option struct {
	Text     string `json:"text"`
	Value    string `json:"value"`
	Selected bool   `json:"selected"`
}

// DatasourceRef points at a data source; "${datasource}" is the variable.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Annotations holds the annotation queries.
type Annotations struct {
	List []Annotation `json:"list"`
}

// Annotation is an annotation query.
type Annotation struct {
	Name        string         `json:"name"`
	Datasource  *DatasourceRef `json:"datasource"`
	Enable      bool           `json:"enable"`
	Hide        bool           `json:"hide"`
	IconColor   string         `json:"iconColor"`
	BuiltIn     int            `json:"builtIn,omitempty"`
	Type        string         `json:"type,omitempty"`
	Expr        string         `json:"expr,omitempty"`
	Step        string         `json:"step,omitempty"`
	TitleFormat string         `json:"titleFormat,omitempty"`
	TextFormat  string         `json:"textFormat,omitempty"`
	TagKeys     string         `json:"tagKeys,omitempty"`
}

// Panel is a dashboard panel (row, table, timeseries, state-timeline, status-history).
type Panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description,omitempty"`
	GridPos     GridPos        `json:"gridPos"`
	Datasource  *DatasourceRef `json:"datasource,omitempty"`
	Targets     []Target       `json:"targets,omitempty"`
	FieldConfig *FieldConfig   `json:"fieldConfig,omitempty"`
	Options     map[string]any `json:"options,omitempty"`
	Collapsed   *bool          `json:"collapsed,omitempty"`
	// Panels are a row's collapsed panels: empty, but present, on a row.
	Panels *[]Panel `json:"panels,omitempty"`
	// Transformations are applied to the queries' results in order (merge, organize).
	Transformations []any `json:"transformations,omitempty"`
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Target is a panel's query.
type Target struct {
	RefID        string         `json:"refId"`
	Datasource   *DatasourceRef `json:"datasource"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat,omitempty"`
	Instant      bool           `json:"instant,omitempty"`
	Range        bool           `json:"range,omitempty"`
	Format       string         `json:"format,omitempty"`
}

// FieldConfig sets units, colours and thresholds.
type FieldConfig struct {
	Defaults  FieldDefaults `json:"defaults"`
	Overrides []any         `json:"overrides"`
}

// FieldDefaults are the defaults of a panel's fields.
type FieldDefaults struct {
	Unit       string         `json:"unit,omitempty"`
	Decimals   *int           `json:"decimals,omitempty"`
	Min        *float64       `json:"min,omitempty"`
	Color      map[string]any `json:"color,omitempty"`
	Thresholds *Thresholds    `json:"thresholds,omitempty"`
	Custom     map[string]any `json:"custom,omitempty"`
	Mappings   []any          `json:"mappings"`
}

// Thresholds colour a value by the steps it reaches.
type Thresholds struct {
	Mode  string `json:"mode"`
	Steps []Step `json:"steps"`
}

// Step is a colour from Value up; the first step's Value is null (from -Inf).
type Step struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"`
}
